"""Which layer is which: the traced layer table and the label, coefficient and multiplier trees
stated on it (`labels`)."""

from wdjax.layers.labels import Layer, LayerTable, conf_layers, trace_layers

__all__ = ["Layer", "LayerTable", "conf_layers", "trace_layers"]
