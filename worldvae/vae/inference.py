"""Inference runtimes for the V's encoder: frames to posterior means, fast on the CPU.

:func:`encoder_runtime` turns a trained :class:`~worldvae.vae.Autoencoder` into a
:class:`FrameEncoder`: uint8 frames ``(N, H, W, C)`` in, float32 latents ``(N, D)`` out (the
posterior mean, as ``model.encode(frames)`` gives). Three runtimes stand behind that interface:

* ``"onnxruntime"``: the encoder rebuilt as an ONNX graph from the model's weights (the
  uint8 -> float cast, the NHWC -> NCHW transpose and the 1/255 scaling folded into the graph,
  only the mean half of the head kept) and run by ONNX Runtime's CPU execution provider, in
  fp32 only (that provider has no bf16 convolutions). Nothing is written to disk and nothing
  is traced or unpickled: the graph is made with ``onnx.helper`` from the weight arrays in
  memory and the session built in a few milliseconds (the first in a process also imports
  onnxruntime and onnx, under 1 s). It holds the weights the model had when it was built.
  Optional: ``pip install -e ".[fast]"``.
* ``"openvino"``: the same graph built and compiled by OpenVINO (0.1-0.2 s; the first in a
  process also loads OpenVINO, about 1 s), in fp32 or, on AMX CPUs, bf16. Optional:
  ``pip install -e ".[fast]"``.
* ``"torch"``: ``model.encode`` under the resolved precision's autocast, on the model's device.

``"auto"`` is ONNX Runtime for a model on the CPU at fp32 where onnxruntime and onnx are
installed (the World Models V at batch 8 on two threads: 1.3 ms against PyTorch's 3.3 ms),
and PyTorch otherwise: on CUDA, for topk codes, for sampled latents, and at bf16 (PyTorch's
bf16 autocast where :func:`worldvae.precision.resolve_precision` decides it pays). OpenVINO
is opt-in (``runtime="openvino"``, ``--runtime openvino``): with OpenVINO loaded in a
process, that process was seen to crash (SIGSEGV) later while waiting on a child process
(``subprocess.run``, a collector worker's ``join``), so it is not the default until that is
understood; the same tests with ONNX Runtime loaded pass. The choice and its numbers are in
``docs/benchmarks.md`` ("The V's encoder on the CPU: inference runtimes").

Precision follows the project's one setting: ``"auto"`` is bf16 on CUDA and on CPUs with AMX,
fp32 elsewhere. OpenVINO's bf16 runs on AMX tiles; its fp32 and ONNX Runtime's are exact to
float rounding. :func:`compare_with_torch` measures how far a runtime's latents lie from
PyTorch's fp32 ones, and :data:`TOLERANCE` states how far they may.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from worldvae.devices import resolve_device
from worldvae.precision import autocast, resolve_precision
from worldvae.vae.autoencoder import Autoencoder

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
# Largest |runtime - torch fp32| allowed, relative to the largest |latent| of the batch. fp32:
# float rounding in another order of operations (measured ~5e-7). bf16: 8-bit mantissas
# through five layers (measured ~4e-3 for OpenVINO and for torch's own bf16 autocast).
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}
INSTALL_HINT = {
    "openvino": 'pip install -e ".[fast]"  (or: pip install openvino)',
    "onnxruntime": 'pip install -e ".[fast]"  (or: pip install onnxruntime onnx)',
}
# Python packages each CPU runtime imports (ONNX Runtime runs a graph that onnx builds).
RUNTIME_MODULES = {"openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx")}
# ONNX opset and IR version of the built graph: opset 13 has every operator it uses, and IR 8
# loads in every onnxruntime the `fast` extra allows.
ONNX_OPSET = 13
ONNX_IR_VERSION = 8


class FrameEncoder(Protocol):
    """Frames to latents on one runtime.

    Attributes:
        name: the runtime, ``"torch"``, ``"openvino"`` or ``"onnxruntime"``.
        precision: ``"fp32"`` or ``"bf16"``, as resolved.
        latent_dim: size ``D`` of the latents.
    """

    name: str
    precision: str
    latent_dim: int

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, H, W, C)`` or ``(H, W, C)`` -> float32 ``(N, D)`` or ``(D,)``."""
        ...


def same_device(asked: torch.device, actual: torch.device) -> bool:
    """Whether ``actual`` is ``asked`` (``cuda`` without an index matches any CUDA device)."""
    return asked.type == actual.type and asked.index in (None, actual.index)


def runtime_available(name: str) -> bool:
    """Whether runtime ``name`` can be used here (its packages import); any other ``name`` is
    taken as a module name."""
    if name == "torch":
        return True
    try:
        for module in RUNTIME_MODULES.get(name, (name,)):
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def linear_code(model: Autoencoder) -> bool:
    """Whether the model's code is its head's output (or its mean half): every kind but topk."""
    return model.config.kind != "topk"


class TorchFrameEncoder:
    """``model.encode`` (posterior mean) under the precision's autocast, on the model's device.

    Example:
        >>> fe = TorchFrameEncoder(model, precision="fp32")
        >>> fe(np.zeros((8, 64, 64, 3), np.uint8)).shape
        (8, 32)
    """

    name = "torch"

    def __init__(self, model: Autoencoder, precision: str = "auto"):
        self.model = model.eval()
        self.precision = resolve_precision(precision, model.device)
        self.latent_dim = model.latent_dim

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, H, W, C)`` or ``(H, W, C)`` -> float32 ``(N, D)`` or ``(D,)``."""
        with autocast(self.model.device, self.precision):
            return self.model.encode(np.asarray(frames))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def build_openvino_encoder(model: Autoencoder) -> Any:
    """The encoder's mean path as an ``openvino.Model`` built from the weights in memory.

    Input ``frames``: uint8 ``(N, H, W, C)`` with a dynamic ``N``; output ``mu``: float32
    ``(N, D)``. The 1/255 scaling is folded into the first convolution's weights.

    Raises:
        ImportError: OpenVINO is not installed.
        ValueError: a ``topk`` model (its code is not a linear function of the features).
    """
    if not linear_code(model):
        raise ValueError(
            f"the OpenVINO encoder covers codes that are the head's output; a {model.config.kind!r} "
            "model keeps its top-k units in PyTorch: use runtime='torch'"
        )
    import openvino as ov
    import openvino.opset13 as ops

    h, w, c = model.config.frame_shape
    frames = ops.parameter([-1, h, w, c], ov.Type.u8, name="frames")
    y = ops.transpose(ops.convert(frames, ov.Type.f32), np.array([0, 3, 1, 2], np.int64))
    scale = np.float32(1.0 / 255.0)
    for layer in model.encoder.net:
        if isinstance(layer, nn.Conv2d):
            weight = _array(layer.weight) * scale
            scale = np.float32(1.0)
            y = ops.convolution(y, weight, list(layer.stride), [0, 0], [0, 0], [1, 1])
            if layer.bias is not None:
                y = ops.add(y, _array(layer.bias).reshape(1, -1, 1, 1))
        elif isinstance(layer, nn.ReLU):
            y = ops.relu(y)
        else:
            raise ValueError(f"the OpenVINO encoder has no translation of {layer}")
    y = ops.reshape(y, np.array([0, -1], np.int64), special_zero=True)  # NCHW flatten, as torch
    d = model.latent_dim
    y = ops.matmul(y, _array(model.head.weight)[:d], False, True)
    y = ops.add(y, _array(model.head.bias)[:d])
    y.output(0).get_tensor().set_names({"mu"})
    return ov.Model([y], [frames], "encoder_mean")


class CompiledFrameEncoder(ABC):
    """What the CPU graph runtimes share: the model they were built from (kept so that pickling
    rebuilds the graph on the other side), its latent size, their precision and threads, and
    the frame checks around one :meth:`_infer` of a batch."""

    name = ""

    def __init__(self, model: Autoencoder, precision: str, n_threads: int | None):
        self.model = model
        self.precision = precision
        self.latent_dim = model.latent_dim
        self.n_threads = n_threads or torch.get_num_threads()

    def __reduce__(self) -> tuple[type[CompiledFrameEncoder], tuple[Autoencoder, str, int]]:
        return type(self), (self.model, self.precision, self.n_threads)

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 latents ``(N, D)`` of the contiguous uint8 frames ``(N, H, W, C)``, N > 0."""

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, H, W, C)`` or ``(H, W, C)`` -> float32 ``(N, D)`` or ``(D,)``."""
        frames = np.asarray(frames)
        self.model.check_frames(frames)
        single = frames.ndim == 3
        batch = np.ascontiguousarray(frames[None] if single else frames)
        if len(batch) == 0:
            return np.zeros((0, self.latent_dim), np.float32)
        z = self._infer(batch)
        return z[0] if single else z


class OpenVINOFrameEncoder(CompiledFrameEncoder):
    """The encoder's mean path compiled by OpenVINO for the CPU.

    Args:
        model: a trained autoencoder (any device; its weights are copied at construction).
        precision: ``"auto"`` (bf16 on AMX CPUs, else fp32), ``"fp32"`` or ``"bf16"``.
        n_threads: inference threads; ``None`` takes ``torch.get_num_threads()``, so a process
            that set ``torch.set_num_threads(1)`` (an env worker) keeps to one thread here too.

    Threads are not pinned to cores: several env processes, each with an encoder, share the
    machine. One instance runs one inference at a time (it reuses one infer request); threads
    that encode concurrently need one instance each. Pickling (or copying) it keeps the model
    and rebuilds the compiled graph on the other side.

    Raises:
        ImportError: OpenVINO is not installed (with the install command).
    """

    name = "openvino"

    def __init__(self, model: Autoencoder, precision: str = "auto", n_threads: int | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise ImportError(
                f"runtime='openvino' needs OpenVINO: {INSTALL_HINT['openvino']}; "
                "or use runtime='auto' (PyTorch where OpenVINO is absent)"
            ) from e
        super().__init__(model, resolve_precision(precision, "cpu"), n_threads)
        compiled = ov.Core().compile_model(
            build_openvino_encoder(model),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": self.n_threads,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,
            },
        )
        self._request = compiled.create_infer_request()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        # the request's output buffer is reused by the next call: copy it out
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def build_onnx_encoder(model: Autoencoder) -> bytes:
    """The encoder's mean path as a serialized ONNX model built from the weights in memory.

    Input ``frames``: uint8 ``(N, H, W, C)`` with a dynamic ``N``; output ``mu``: float32
    ``(N, D)``. The graph is the one :func:`build_openvino_encoder` makes: ``Cast`` to float,
    ``Transpose`` to NCHW, the convolutions (the 1/255 scaling folded into the first one's
    weights) with ``Relu``, ``Flatten`` (NCHW order, as torch) and a ``Gemm`` with the mean
    half of the head. Nothing is traced or written to disk.

    Raises:
        ImportError: onnx is not installed.
        ValueError: a ``topk`` model (its code is not a linear function of the features).
    """
    if not linear_code(model):
        raise ValueError(
            f"the ONNX Runtime encoder covers codes that are the head's output; a "
            f"{model.config.kind!r} model keeps its top-k units in PyTorch: use runtime='torch'"
        )
    from onnx import TensorProto, helper, numpy_helper

    weights: list[Any] = []
    nodes: list[Any] = []

    def constant(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    h, w, c = model.config.frame_shape
    nodes.append(helper.make_node("Cast", ["frames"], ["x_f32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Transpose", ["x_f32"], ["x0"], perm=[0, 3, 1, 2]))
    y, scale = "x0", np.float32(1.0 / 255.0)
    for i, layer in enumerate(model.encoder.net):
        out = f"x{i + 1}"
        if isinstance(layer, nn.Conv2d) and not isinstance(layer.padding, str):
            inputs = [y, constant(f"conv{i}.weight", _array(layer.weight) * scale)]
            scale = np.float32(1.0)
            if layer.bias is not None:
                inputs.append(constant(f"conv{i}.bias", _array(layer.bias)))
            ph, pw = layer.padding
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [out],
                    kernel_shape=list(layer.kernel_size),
                    strides=list(layer.stride),
                    pads=[ph, pw, ph, pw],
                    dilations=list(layer.dilation),
                    group=layer.groups,
                )
            )
        elif isinstance(layer, nn.ReLU):
            nodes.append(helper.make_node("Relu", [y], [out]))
        else:
            raise ValueError(f"the ONNX Runtime encoder has no translation of {layer}")
        y = out
    nodes.append(helper.make_node("Flatten", [y], ["features"], axis=1))
    d = model.latent_dim
    head_w = constant("head.weight", _array(model.head.weight)[:d])  # (D, F)
    head_b = constant("head.bias", _array(model.head.bias)[:d])  # (D,)
    nodes.append(helper.make_node("Gemm", ["features", head_w, head_b], ["mu"], transB=1))
    graph = helper.make_graph(
        nodes,
        "encoder_mean",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", h, w, c])],
        [helper.make_tensor_value_info("mu", TensorProto.FLOAT, ["batch", d])],
        initializer=weights,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="worldvae",
    )
    return bytes(onnx_model.SerializeToString())


class OnnxRuntimeFrameEncoder(CompiledFrameEncoder):
    """The encoder's mean path run by ONNX Runtime's CPU execution provider.

    Args:
        model: a trained autoencoder (any device; its weights are copied at construction).
        precision: ``"auto"`` or ``"fp32"``; both run fp32. ONNX Runtime's CPU execution
            provider has no bf16 kernels for these operators, so ``"bf16"`` is refused rather
            than run in fp32 under a bf16 label.
        n_threads: intra-op threads (one inter-op thread: the graph is a chain); ``None``
            takes ``torch.get_num_threads()``, so a process that set
            ``torch.set_num_threads(1)`` (an env worker) keeps to one thread here too.

    The session is built from :func:`build_onnx_encoder`'s bytes in memory (a few tens of
    milliseconds). Its threads do not spin while idle: several env processes, each with an
    encoder, share the machine. One session may be called from several threads; pickling (or
    copying) it keeps the model and rebuilds the session on the other side.

    Raises:
        ImportError: onnxruntime or onnx is not installed (with the install command).
        ValueError: ``precision="bf16"``, or a ``topk`` model.
    """

    name = "onnxruntime"

    def __init__(self, model: Autoencoder, precision: str = "auto", n_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(
                f"runtime='onnxruntime' needs ONNX Runtime: {INSTALL_HINT['onnxruntime']}; "
                "or use runtime='auto' (PyTorch where ONNX Runtime is absent)"
            ) from e
        if resolve_precision(precision, "cpu", cpu_bf16=lambda: False) != "fp32":
            raise ValueError(
                "runtime='onnxruntime' runs fp32 only (its CPU execution provider has no bf16 "
                "convolutions); use precision='fp32' or 'auto', or runtime='openvino' or "
                "'torch' for bf16"
            )
        super().__init__(model, "fp32", n_threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.n_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            build_onnx_encoder(model), options, providers=["CPUExecutionProvider"]
        )

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        z: np.ndarray = self._session.run(None, {"frames": batch})[0]
        return z


def resolve_runtime(runtime: str, model: Autoencoder, precision: str = "auto") -> str:
    """The runtime ``"auto"`` stands for with this model, or ``runtime`` itself once checked.

    ``"auto"`` is ONNX Runtime for a model on the CPU whose code is its head's output (every
    kind but topk), where onnxruntime and onnx are installed, at ``precision`` ``"auto"`` or
    ``"fp32"`` (ONNX Runtime runs fp32: faster on the CPU than PyTorch's bf16 autocast, and
    exact); PyTorch otherwise: always on CUDA, and for ``precision="bf16"``.

    Raises:
        ValueError: an unknown runtime or precision, or a CPU runtime asked for a model on CUDA.
        ImportError: a named runtime that is not installed (with the install command).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    on_cpu = model.device.type == "cpu"
    if runtime == "auto":
        resolve_precision(precision, model.device)  # an unknown precision is an error here
        cpu_fp32 = on_cpu and precision != "bf16"
        if cpu_fp32 and linear_code(model) and runtime_available("onnxruntime"):
            return "onnxruntime"
        return "torch"
    if runtime != "torch" and not on_cpu:
        raise ValueError(
            f"runtime={runtime!r} runs on the CPU, the model is on {model.device}; "
            "use runtime='torch' (or 'auto') on CUDA, or load the model with device='cpu'"
        )
    if not runtime_available(runtime):
        raise ImportError(
            f"runtime={runtime!r} is not installed: {INSTALL_HINT[runtime]}; "
            "or use runtime='auto' (PyTorch where it is absent)"
        )
    return runtime


def encoder_runtime(
    model: Autoencoder,
    runtime: str = "auto",
    device: str | torch.device | None = None,
    precision: str = "auto",
    n_threads: int | None = None,
) -> FrameEncoder:
    """A :class:`FrameEncoder` for ``model``'s posterior mean on ``runtime``.

    Args:
        model: a trained autoencoder in eval mode.
        runtime: ``"auto"``, ``"torch"``, ``"openvino"`` or ``"onnxruntime"`` (see the
            module docstring).
        device: where it runs; ``None`` is the model's own device. A device other than the
            model's is an error (the model is not moved behind the caller's back).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
        n_threads: CPU threads of a CPU runtime (``None``: ``torch.get_num_threads()``).

    Raises:
        ValueError: an unknown runtime or precision, or a device the model is not on.
        ImportError: a named runtime that is not installed.

    Example:
        >>> fe = encoder_runtime(load_model("runs/vae/carracing", device="cpu"))
        >>> fe.name, fe(np.zeros((8, 64, 64, 3), np.uint8)).shape
        ('onnxruntime', (8, 32))
    """
    if device is not None and not same_device(resolve_device(device), model.device):
        raise ValueError(
            f"encoder_runtime: the model is on {model.device}, device={str(device)!r} was asked "
            f"for; load it there first: load_model(path, device={str(device)!r})"
        )
    chosen = resolve_runtime(runtime, model, precision)
    if chosen == "openvino":
        return OpenVINOFrameEncoder(model, precision=precision, n_threads=n_threads)
    if chosen == "onnxruntime":
        return OnnxRuntimeFrameEncoder(model, precision=precision, n_threads=n_threads)
    return TorchFrameEncoder(model, precision)


@dataclass(frozen=True)
class LatentAgreement:
    """How far a runtime's latents lie from PyTorch's fp32 ones on the same frames.

    Attributes:
        max_abs: largest ``|z_runtime - z_torch|`` over the batch.
        rel: ``max_abs`` over the largest ``|z_torch|``.
        tolerance: the largest ``rel`` allowed at the runtime's precision.
    """

    max_abs: float
    rel: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel <= self.tolerance


def compare_with_torch(
    encoder: FrameEncoder, model: Autoencoder, frames: np.ndarray
) -> LatentAgreement:
    """Latents of ``encoder`` against ``model.encode`` in fp32 on frames ``(N, H, W, C)``."""
    reference = np.asarray(model.encode(np.asarray(frames)), np.float32)
    max_abs = float(np.abs(encoder(frames) - reference).max())
    scale = float(np.abs(reference).max()) or 1.0
    return LatentAgreement(max_abs, max_abs / scale, TOLERANCE[encoder.precision])
