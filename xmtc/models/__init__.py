"""XMTC LightningModules."""

from xmtc.models.aplc import APLCXLNet
from xmtc.models.attentionxml import AttentionXML
from xmtc.models.base import XMTCModule

__all__ = ["APLCXLNet", "AttentionXML", "XMTCModule"]
