"""Dense CRF (Krähenbühl & Koltun 2011, via pydensecrf) on probabilities or pseudo-labels.

Unary −log p (p clipped to [min_prob, 1]); a Gaussian kernel (``gaussian_sxy``,
``gaussian_compat``) and a bilateral kernel (``bilateral_sxy``, ``bilateral_srgb``,
``bilateral_compat``) on the **RGB** image (the GETAM paper's code passed OpenCV's BGR array by
mistake, so its colour kernel saw swapped channels; ours takes RGB). Mean-field
``iterations`` from :class:`wsss.config.CrfConfig`.

Many images are refined in a process pool (``config.workers`` processes, forkserver start
where available, else spawn: never fork, so torch's thread pool in the parent cannot deadlock
the workers). The forkserver preloads this module once, so each worker starts in well under a
second; pass ``executor=`` to reuse one pool across calls. ``start_crf_label_maps`` and
``start_crf_pseudo_labels`` only submit the jobs to such a pool and return a function that
waits for them, so a caller can compute the next batch's maps meanwhile (the label chain's
``refine.crf.overlap``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from wsss.data.label_png import IGNORE_INDEX
from wsss.lifetime import exit_with

if TYPE_CHECKING:
    from wsss.config import CrfConfig

__all__ = ["start_crf_label_maps", "start_crf_pseudo_labels", "label_probs",
           "crf_pool", "crf_executor", "crf_overlaps"]


# (iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat)
_Params = tuple[int, float, float, float, float, float]


def _params(config: CrfConfig | None) -> _Params:
    if config is None:
        from wsss.config import CrfConfig

        config = CrfConfig()
    return (config.iterations, config.gaussian_sxy, config.gaussian_compat,
            config.bilateral_sxy, config.bilateral_srgb, config.bilateral_compat)


def _check(image: np.ndarray, probs: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an H×W×3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2] or probs.shape[0] < 1:
        raise ValueError(f"probs must be K×H×W with H×W = {image.shape[:2]} (the image's), got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be a float array, got dtype {probs.dtype}")
    if np.isnan(probs).any():
        raise ValueError(f"probs of shape {probs.shape} contain NaN")


def _inference(image: np.ndarray, probs: np.ndarray, params: _Params, min_prob: float) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    iterations, g_sxy, g_compat, b_sxy, b_srgb, b_compat = params
    K, H, W = probs.shape
    unary = -np.log(np.clip(probs, min_prob, 1.0)).astype(np.float32).reshape(K, H * W)
    crf = dcrf.DenseCRF2D(W, H, K)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=g_sxy, compat=g_compat)
    crf.addPairwiseBilateral(sxy=b_sxy, srgb=b_srgb, rgbim=np.ascontiguousarray(image), compat=b_compat)
    q = np.asarray(crf.inference(iterations), dtype=np.float32).reshape(K, H, W)
    return q.argmax(axis=0)


def _job(args: tuple[np.ndarray, np.ndarray, _Params, float]) -> np.ndarray:
    image, probs, params, min_prob = args
    return _inference(image, probs, params, min_prob)


def crf_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for the CRF (forkserver with numpy and pydensecrf preloaded, else spawn).

    Pass it as ``executor`` to the CRF functions (or to PseudoLabeler) when calling them batch
    after batch: starting a pool costs more than the CRF of a small batch.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Forked workers then start with these imported (takes effect if the server is not up yet).
        context.set_forkserver_preload(["numpy", "pydensecrf.densecrf", __name__])
    else:
        context = multiprocessing.get_context("spawn")
    # Workers end with this process even when it is killed (SIGKILL leaves no CRF worker behind),
    # and leave Ctrl-C to it.
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=exit_with,
                               initargs=(os.getpid(), 1.0, True))


@contextmanager
def crf_executor(config: CrfConfig | None) -> Iterator[Executor | None]:
    """One CRF pool for a whole run of many batches, or None (in-process) when there is no
    CRF (``config`` None), ``config.workers`` is 1, or this process is a daemon (a pool worker
    may not start children). Pass what it yields as ``executor``."""
    if config is None or config.workers <= 1 or multiprocessing.current_process().daemon:
        yield None
        return
    with crf_pool(config.workers) as pool:
        yield pool


def crf_overlaps(config: CrfConfig, device) -> bool:
    """Whether a batch's CRF jobs should run while the next batch is computed
    (``config.overlap``; auto: when that computation runs on a GPU, ``device``: a torch.device
    or its name; compared by name, so that the pool's workers, which import this module, need
    no torch)."""
    if isinstance(config.overlap, bool):
        return config.overlap
    return str(device).split(":")[0] == "cuda"


def start_crf_label_maps(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], config: CrfConfig | None = None,
                         min_prob: float = 1e-5,
                         executor: Executor | None = None) -> Callable[[], list[np.ndarray]]:
    """Refine images' label probabilities with a dense CRF, in ``config.workers`` processes;
    order preserved. Each image's result is the index into its K labels of the CRF's most
    probable label. In two steps: with an ``executor``, the jobs are submitted and this returns
    at once; the returned function waits for them and gives the N maps (a worker's error is
    raised there). Without one, the CRF runs before this returns.

        maps = start_crf_label_maps(images, probs, config)()

    Args:
        images: N arrays ``H_n×W_n×3`` uint8 RGB (sizes may differ).
        probs: N arrays ``K_n×H_n×W_n`` float (K may differ per image).
        config: kernel parameters, iterations and workers (defaults: ``CrfConfig()``); ``workers
            == 1`` (or no config) runs in this process,
            and so does a call from a daemonic process, which may not start children.
        executor: an existing executor to use instead of a new pool (kept open).

    Returns:
        A function giving N arrays ``H_n×W_n`` int64. All inputs are checked here, before any
        work starts.
    """
    images, probs = [np.asarray(x) for x in images], [np.asarray(p) for p in probs]
    if len(images) != len(probs):
        raise ValueError(f"got {len(images)} images but {len(probs)} probability maps")
    for n, (image, p) in enumerate(zip(images, probs)):
        try:
            _check(image, p)
        except ValueError as error:
            raise ValueError(f"item {n}: {error}") from None
    params = _params(config)
    jobs = [(image, p, params, min_prob) for image, p in zip(images, probs)]
    if executor is not None:
        futures = [executor.submit(_job, job) for job in jobs]
        return lambda: [future.result() for future in futures]
    workers = 1 if config is None else config.workers
    if multiprocessing.current_process().daemon:
        workers = 1  # a daemonic process (e.g. a pool worker) may not start children
    if workers == 1 or len(jobs) <= 1:
        done = [_job(job) for job in jobs]
    else:
        workers = min(workers, len(jobs))
        with crf_pool(workers) as pool:
            done = list(pool.map(_job, jobs, chunksize=max(1, math.ceil(len(jobs) / (4 * workers)))))
    return lambda: done


def label_probs(label: np.ndarray, confidence: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for a CRF from a pseudo-label.

    Args:
        label: ``H×W`` integer label map: 0 = background, 1..C = classes, 255 = ignore.
        confidence: probability given to a pixel's own label, in (1/K, 1).

    Returns:
        ``(values, probs)``: the K label values in use (0 first, then the classes present,
        ascending) and ``K×H×W`` float32 probabilities: ``confidence`` on the pixel's label and
        the rest shared evenly; uniform 1/K on ignored pixels.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be an H×W map, got shape {label.shape}")
    values = np.unique(label)
    values = np.concatenate([[0], values[(values != 0) & (values != IGNORE_INDEX)]]).astype(label.dtype)
    K = len(values)
    if K > 1 and not 1.0 / K < confidence < 1.0:
        raise ValueError(f"confidence must be in (1/K, 1) = ({1.0 / K:.3g}, 1) for K = {K} labels, got {confidence}")
    if label.size and label.min() < 0:
        raise ValueError(f"label values must be >= 0, got minimum {label.min()}")
    lookup = np.full(max(int(label.max(initial=0)), IGNORE_INDEX) + 1, -1, dtype=np.int64)
    lookup[values] = np.arange(K)
    index = lookup[label]
    rest = (1.0 - confidence) / max(K - 1, 1)
    probs = np.full((K, *label.shape), rest, dtype=np.float32)
    rows, cols = np.nonzero(index >= 0)
    probs[index[rows, cols], rows, cols] = confidence
    probs[:, index < 0] = 1.0 / K
    return values, probs


def start_crf_pseudo_labels(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                            config: CrfConfig | None = None, confidence: float = 0.7,
                            executor: Executor | None = None) -> Callable[[], list[np.ndarray]]:
    """The pseudo-label CRF step: align the label rule's output with colour edges.

    It consumes the pseudo-labels themselves (not the class maps): each pixel's unary puts
    ``confidence`` on its label (see :func:`label_probs`), ignored pixels are uniform, the CRF
    runs on the RGB image over {background, classes present in the label}, and the result
    keeps 255 wherever the rule said ignore. So every decision of the rule (saliency,
    completion, conflict, opening) is the prior and the CRF only moves class/background
    boundaries. (Unaries from [bg, maps] with the rule's α = 32 would give weakly activated
    background pixels mostly to the classes and undo the saliency decision.) In two steps, as
    :func:`start_crf_label_maps`: with an ``executor`` the jobs are submitted and the returned
    function waits for them.

    Args:
        images: N arrays ``H×W×3`` uint8 RGB.
        labels: N arrays ``H×W`` int label maps (0, 1..C, 255), e.g. from :func:`pseudo_labels`.
        config, executor: as :func:`start_crf_label_maps`.
        confidence: probability of a pixel's own label in the unary.

    Returns:
        A function giving N arrays ``H×W`` uint8 with values 0, 1..C, 255. A label with no class
        is returned as is.
    """
    labels = [np.asarray(label) for label in labels]
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label maps")
    built = [label_probs(label, confidence) for label in labels]
    todo = [n for n, (values, _) in enumerate(built) if len(values) > 1]
    pending = start_crf_label_maps([images[n] for n in todo], [built[n][1] for n in todo], config,
                                   executor=executor)

    def finish() -> list[np.ndarray]:
        out = [label.astype(np.uint8) for label in labels]
        for n, index in zip(todo, pending()):
            out[n] = np.where(labels[n] == IGNORE_INDEX, IGNORE_INDEX, built[n][0][index]).astype(np.uint8)
        return out

    return finish
