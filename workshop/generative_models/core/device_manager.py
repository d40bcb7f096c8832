"""Guide import path for the device manager (re-exports `workshop.core.device_manager`)."""

from workshop.core.device_manager import (  # noqa: F401
    DeviceManager as DeviceManager,
    MemoryStrategy as MemoryStrategy,
    PrecisionPolicy as PrecisionPolicy,
    configure_for_generative_models as configure_for_generative_models,
    get_device_manager as get_device_manager,
    get_precision_policy as get_precision_policy,
)

__all__ = [
    "DeviceManager",
    "MemoryStrategy",
    "PrecisionPolicy",
    "configure_for_generative_models",
    "get_device_manager",
    "get_precision_policy",
]
