"""PEFT registration of the ``INTRINSIC`` method: one ``PeftType`` member and one ``register_peft_method`` call.

``PeftType`` is a ``str`` enum without a member for methods outside PEFT, so one is added (value
``"INTRINSIC"``) unless it exists. Registration runs when :mod:`idcompress.tuners` is imported;
``import idcompress`` alone does not import peft (seconds), so it installs
:mod:`idcompress._peft_hook`, which imports :mod:`idcompress.tuners` right after ``import peft``.
"""

from __future__ import annotations

from ..names import METHOD_NAME, PEFT_TYPE, PREFIX


def peft_type_member():
    """``PeftType.INTRINSIC``, added to PEFT's enum on first use."""
    from peft.utils.peft_types import PeftType

    if PEFT_TYPE in PeftType.__members__:
        return PeftType[PEFT_TYPE]
    member = str.__new__(PeftType, PEFT_TYPE)
    member._name_ = PEFT_TYPE
    member._value_ = PEFT_TYPE
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    type.__setattr__(PeftType, PEFT_TYPE, member)  # EnumType.__setattr__ refuses new members
    PeftType._member_map_[PEFT_TYPE] = member
    PeftType._value2member_map_[PEFT_TYPE] = member
    PeftType._member_names_.append(PEFT_TYPE)
    return member


def register(config_cls, model_cls) -> None:
    """Register ``INTRINSIC`` with PEFT's method registry (idempotent)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils.peft_types import register_peft_method

    key = peft_type_member()
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(key) is config_cls:
        return
    register_peft_method(name=METHOD_NAME, config_cls=config_cls, model_cls=model_cls, prefix=PREFIX)
