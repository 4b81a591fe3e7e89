"""Which layer is which: the traced layer table (`table`) and the label, coefficient and
multiplier trees stated on it (`labels`)."""

from wdjax.layers.table import Layer, LayerTable, conf_layers, trace_layers

__all__ = ["Layer", "LayerTable", "conf_layers", "trace_layers"]
