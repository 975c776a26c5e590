"""The guided filter on class probabilities: box means, edges kept, flat regions averaged, the
Predictor's filter and the scores with and without it."""

import numpy as np
import pytest
import torch

from wsss.config import GuidedFilterConfig
from wsss.data import open_dataset
from wsss.eval.segmenter_scores import evaluate_segmenter
from wsss.models.segmentation_model import create_segmenter
from wsss.predict import Predictor
from wsss.refine.guided_filter import box_mean, guided_filter
from tests.test_segmenter import segmenter_config

torch.set_num_threads(1)


def test_box_mean_is_the_mean_over_each_clipped_window():
    x = torch.rand(2, 3, 13, 9, generator=torch.Generator().manual_seed(0))
    for radius in (1, 3, 20):  # 20: every window is the whole image
        expected = torch.zeros_like(x)
        for i in range(13):
            for j in range(9):
                window = x[..., max(0, i - radius):i + radius + 1, max(0, j - radius):j + radius + 1]
                expected[..., i, j] = window.mean(dim=(-2, -1))
        assert torch.allclose(box_mean(x, radius), expected, atol=1e-5)


def step_image(h=32, w=48, edge=21):
    """A dark left part and a bright right part from column ``edge`` on, B×3×H×W in [0, 1]."""
    image = torch.full((1, 3, h, w), 0.2)
    image[..., edge:] = torch.tensor([0.9, 0.6, 0.3]).view(1, 3, 1, 1)
    return image


def test_a_boundary_blurred_across_an_edge_moves_onto_the_edge():
    image, edge = step_image(), 21
    columns = torch.arange(48, dtype=torch.float32)
    foreground = torch.sigmoid((columns - 25.0) / 3.0).expand(1, 1, 32, 48)  # blurred, off the edge
    probs = torch.cat([1 - foreground, foreground], dim=1)
    assert (probs.argmax(1)[0, 0] == 1).nonzero()[0].item() == 26  # 5 px right of the edge
    out = guided_filter(image, probs, radius=10, eps=1e-4)  # windows wider than the offset
    assert out.shape == probs.shape and (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(1, 32, 48))
    labels = out.argmax(1)[0]
    assert (labels[:, :edge] == 0).all() and (labels[:, edge:] == 1).all()  # the step of the image, every row


def test_on_a_flat_image_the_filter_is_a_smoothing_of_the_probabilities():
    flat = torch.full((1, 3, 20, 20), 0.5)
    probs = torch.softmax(torch.randn(1, 4, 20, 20, generator=torch.Generator().manual_seed(1)), dim=1)
    out = guided_filter(flat, probs, radius=2, eps=1e-4)
    expected = box_mean(box_mean(probs, 2), 2)  # no colour to follow: a = 0, b = the window's mean
    assert torch.allclose(out, expected / expected.sum(1, keepdim=True), atol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="same B, H, W"):
        guided_filter(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 9), radius=2)
    with pytest.raises(ValueError, match="radius must be >= 1"):
        guided_filter(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), radius=0)


@pytest.fixture
def segmenter(tmp_path):
    config = segmenter_config(tmp_path)
    torch.manual_seed(0)
    return create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=6).eval()


def test_the_predictor_filters_its_average_with_a_radius_in_tokens(segmenter):
    image = np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    plain = Predictor(segmenter, scales=(1.0, 1.5), flip=True)
    guided = Predictor(segmenter, scales=(1.0, 1.5), flip=True, guided=GuidedFilterConfig(radius=1.5))
    assert plain.guided is None and Predictor(segmenter, guided=GuidedFilterConfig(radius=0)).guided is None
    assert guided.guided_radius == round(1.5 * segmenter.stride / 1.25)  # tokens × stride / mean scale
    raw = guided.averaged([image])
    assert torch.equal(raw, plain([image]))  # the average itself is the unfiltered prediction
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    assert torch.allclose(guided([image]), guided_filter(rgb, raw, guided.guided_radius, 1e-4))
    assert not torch.allclose(guided([image]), raw)


def test_scores_with_a_filter_keep_the_argmax_without_it(segmenter, tmp_path):
    config = segmenter_config(tmp_path)
    dataset = open_dataset(config.data, "val")
    plain = evaluate_segmenter(Predictor(segmenter, scales=(1.0,)), dataset, progress=False)
    guided = evaluate_segmenter(Predictor(segmenter, scales=(1.0,), guided=GuidedFilterConfig(radius=1.0)), dataset,
                                crf=config.refine.crf, progress=False)
    assert guided.filtered and not plain.filtered
    assert np.array_equal(guided.unfiltered().confusion.matrix, plain.argmax().confusion.matrix)
    assert np.array_equal(plain.unfiltered().confusion.matrix, plain.argmax().confusion.matrix)
    total = sum(dataset[i].mask.size for i in range(len(dataset)))
    assert guided.argmax().confusion.matrix.sum() == total == guided.final().confusion.matrix.sum()
