"""The backend-neutral experiment spec: frozen dataclasses that validate themselves.

Build one from TOML (`loads`, `load`), from a table (`from_dict`), or in Python, with the dataclasses
directly or with `make(cls, defaults="torch", **fields)` to take the fields left out from a preset."""

from crossnn.spec.activations import GELU, Activation, LeakyReLU, Linear, ReLU, Sigmoid, Softmax, Softplus, Tanh
from crossnn.spec.base import Array, Spec
from crossnn.spec.data import (
    Adder, Circle, CsvFile, DataSource, Digits, InlineData, Line, NpzFile, RandomNormal, TeacherClasses, Textures,
    TokenSums,
)
from crossnn.spec.experiment import Experiment, Train
from crossnn.spec.initializers import (
    Constant, FanInUniform, GlorotNormal, GlorotUniform, HeNormal, HeUniform, Initializer, LecunNormal,
    LecunUniform, Normal, Ones, Orthogonal, TruncatedNormal, Uniform, UnitsUniform, VarianceScaling, Zeros,
)
from crossnn.spec.layers import (
    GRU, LSTM, ActivationLayer, Add, AvgPool2D, BatchNorm, Concatenate, Conv2D, Dense, Dropout, Embedding, Flatten,
    GlobalAvgPool2D, Layer, LayerNorm, MaxPool2D, ParamInit, Reshape, Shape, SimpleRNN,
)
from crossnn.spec.losses import BCE, MAE, MSE, BCELogits, CrossEntropy, Huber, Loss
from crossnn.spec.model import INPUT, Model, Node
from crossnn.spec.optimizers import (
    SGD, Adagrad, Adam, AdamW, ExponentialDecay, Optimizer, RMSprop, Schedule, StepDecay,
)
from crossnn.spec.presets import Condition, Default, make
from crossnn.spec.toml import dumps, load, loads, save
from crossnn.spec.toml import experiment_from_dict as from_dict

__all__ = [
    "Activation", "ActivationLayer", "Adagrad", "Adam", "AdamW", "Add", "Adder", "Array", "AvgPool2D", "BCE",
    "BCELogits", "Circle", "Concatenate", "Condition", "Constant", "Conv2D", "Flatten", "GlobalAvgPool2D", "MaxPool2D",
    "Reshape", "Shape", "Textures", "TokenSums", "BatchNorm", "LayerNorm", "Embedding", "SimpleRNN", "LSTM", "GRU",
    "Orthogonal", "UnitsUniform", "CrossEntropy", "CsvFile", "DataSource", "Default", "Dense", "Digits", "Dropout",
    "Experiment",
    "ExponentialDecay", "FanInUniform", "GELU",
    "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Huber", "INPUT", "InlineData", "Initializer",
    "Layer", "LeakyReLU", "LecunNormal", "LecunUniform", "Line", "Linear", "Loss", "MAE", "MSE", "Model",
    "Node", "Normal", "NpzFile", "Ones", "Optimizer", "ParamInit", "RMSprop", "RandomNormal", "ReLU", "SGD",
    "Schedule", "Sigmoid", "StepDecay",
    "Softmax", "Softplus", "Spec", "Tanh", "TeacherClasses", "Train", "TruncatedNormal", "Uniform", "VarianceScaling",
    "Zeros",
    "dumps", "from_dict", "load", "loads", "make", "save",
]
