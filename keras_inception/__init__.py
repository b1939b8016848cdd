"""keras-inception: GoogLeNet, InceptionV2 and InceptionV3 for Keras 3.

Builders follow the conventions of `keras.applications`; auxiliary classifiers are extra
named outputs, dropped for inference by `strip_aux_heads`. Imports `keras` only, so the
models run on every Keras backend.
"""

from keras_inception import analysis
from keras_inception.googlenet import GOOGLENET_SPECS, build_googlenet
from keras_inception.heads import default_loss_weights, strip_aux_heads
from keras_inception.layers import LocalResponseNormalization
from keras_inception.registry import get_builder, get_model, list_models
from keras_inception.specs import V1Module, V1Stem, load_specs, save_specs, scale_table

__version__ = "0.1.0"

__all__ = [
    "GOOGLENET_SPECS",
    "LocalResponseNormalization",
    "V1Module",
    "V1Stem",
    "analysis",
    "build_googlenet",
    "default_loss_weights",
    "get_builder",
    "get_model",
    "list_models",
    "load_specs",
    "save_specs",
    "scale_table",
    "strip_aux_heads",
]
