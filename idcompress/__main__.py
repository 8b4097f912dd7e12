import sys

from idcompress.cli.main import main

sys.exit(main())
