"""XMTC LightningModules."""

from xmtc.models.attentionxml import AttentionXML
from xmtc.models.base import XMTCModule

__all__ = ["AttentionXML", "XMTCModule"]
