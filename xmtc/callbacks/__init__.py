"""Lightning callbacks of xmtc: robustness during training, the CLI config saved with W&B runs."""

from xmtc.callbacks.robustness import RobustnessCallback
from xmtc.callbacks.save_config import SaveConfigToLoggers

__all__ = ["RobustnessCallback", "SaveConfigToLoggers"]
