"""Lightning callbacks of xmtc: robustness during training, adversarial training, the CLI config saved with W&B runs."""

from xmtc.callbacks.adversarial_training import AdversarialTraining
from xmtc.callbacks.robustness import RobustnessCallback
from xmtc.callbacks.save_config import SaveConfigToLoggers

__all__ = ["AdversarialTraining", "RobustnessCallback", "SaveConfigToLoggers"]
