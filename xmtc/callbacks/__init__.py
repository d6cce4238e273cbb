"""Lightning callbacks of xmtc: robustness during training, adversarial training, epoch times, the CLI config
saved with W&B runs."""

from xmtc.callbacks.adversarial_training import AdversarialTraining
from xmtc.callbacks.epoch_timer import EpochTimer
from xmtc.callbacks.robustness import RobustnessCallback
from xmtc.callbacks.save_config import SaveConfigToLoggers

__all__ = ["AdversarialTraining", "EpochTimer", "RobustnessCallback", "SaveConfigToLoggers"]
