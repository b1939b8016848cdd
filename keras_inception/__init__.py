"""keras-inception: GoogLeNet, InceptionV2 and InceptionV3 for Keras 3.

Builders follow the conventions of `keras.applications`; auxiliary classifiers are extra
named outputs, dropped for inference by `strip_aux_heads`. Imports `keras` only, so the
models run on every Keras backend. Their `.keras` files record Keras's own layers (the
fused batch norm as `keras.layers.BatchNormalization`), so `keras.saving.load_model` reads
them without this package, and `keras_inception.load_model` with the fused layer; the one
custom layer, `LocalResponseNormalization` (GoogLeNet with `batch_norm=False`), still
needs this package to load. `AdaptiveAveragePooling2D` (`aux_pool="torch"`) is Keras's
own layer, re-exported under its old name here.

Example:
>>> model = build_googlenet(stem="small", input_shape=(8, 8, 1), classes=3,
...                         width_multiplier=0.125)
>>> tuple(model.output.shape)
(None, 3)
"""

from keras_inception import analysis
from keras_inception.features import feature_model
from keras_inception.fused_batchnorm import (
    FusedBatchNormalization,
    fuse_batch_norm,
    load_model,
)
from keras_inception.googlenet import GOOGLENET_SPECS, build_googlenet
from keras_inception.heads import default_loss_weights, strip_aux_heads
from keras_inception.inception_v2 import (
    BN_INCEPTION_SPECS,
    INCEPTION_V2_SPECS,
    build_inception_v2,
)
from keras_inception.inception_v3 import INCEPTION_V3_SPECS, build_inception_v3
from keras_inception.layers import AdaptiveAveragePooling2D, LocalResponseNormalization
from keras_inception.metadata import class_names_of, write_class_names
from keras_inception.preprocessing_layers import preprocessing_of, with_preprocessing
from keras_inception.pretrained import (
    class_names,
    decode_predictions,
    from_slim,
    from_torchvision,
    preprocess_input,
)
from keras_inception.registry import default_specs, get_builder, get_model, list_models
from keras_inception.specs import (
    BNInceptionStem,
    BNModule,
    BNReduction,
    V1Module,
    V1Stem,
    V2Stem,
    V3ModuleA,
    V3ModuleB,
    V3ModuleC,
    V3ReductionA,
    V3ReductionB,
    V3Stem,
    load_specs,
    save_specs,
    scale_table,
)

__version__ = "0.1.0"

__all__ = [
    "AdaptiveAveragePooling2D",
    "BN_INCEPTION_SPECS",
    "BNInceptionStem",
    "BNModule",
    "BNReduction",
    "FusedBatchNormalization",
    "GOOGLENET_SPECS",
    "INCEPTION_V2_SPECS",
    "INCEPTION_V3_SPECS",
    "LocalResponseNormalization",
    "V1Module",
    "V1Stem",
    "V2Stem",
    "V3ModuleA",
    "V3ModuleB",
    "V3ModuleC",
    "V3ReductionA",
    "V3ReductionB",
    "V3Stem",
    "analysis",
    "build_googlenet",
    "build_inception_v2",
    "build_inception_v3",
    "class_names",
    "class_names_of",
    "decode_predictions",
    "default_loss_weights",
    "default_specs",
    "feature_model",
    "from_slim",
    "from_torchvision",
    "fuse_batch_norm",
    "get_builder",
    "get_model",
    "list_models",
    "load_model",
    "load_specs",
    "preprocess_input",
    "preprocessing_of",
    "save_specs",
    "scale_table",
    "strip_aux_heads",
    "with_preprocessing",
    "write_class_names",
]
