"""Maps averaged over scales and mirror images (cam.scales, cam.flip)."""

import pydantic
import pytest
import timm
import torch
import torch.nn.functional as F

from wsss.attention import GETAM, MultiViewMaps, configured_map_method
from wsss.attention.views import normalise_maps
from wsss.config import CamConfig

torch.set_num_threads(2)

LABELS = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, depth=3, img_size=64,
                              patch_size=8, dynamic_img_size=True).eval()
    return model, torch.randn(2, 3, 64, 48)


def test_single_view_is_the_bare_method():
    method = configured_map_method(CamConfig(method="getam", start_block=1))
    assert isinstance(method, GETAM) and method.start_block == 1
    wrapped = configured_map_method(CamConfig(method="relevance", scales=[1.0, 1.5], flip=True))
    assert isinstance(wrapped, MultiViewMaps) and wrapped.name == "relevance" and wrapped.num_views == 4
    assert configured_map_method(CamConfig(flip=True), "gradcam").name == "gradcam"


def test_one_view_equals_the_normalised_method(setup):
    model, x = setup
    plain = normalise_maps(GETAM(0)(model, x, LABELS))
    assert torch.allclose(MultiViewMaps(GETAM(0))(model, x, LABELS), plain)


def test_flip_average_is_mirror_symmetric(setup):
    model, x = setup
    views = MultiViewMaps(GETAM(0), flip=True)
    out, mirrored = views(model, x, LABELS), views(model, x.flip(-1), LABELS)
    assert torch.allclose(mirrored, out.flip(-1), atol=1e-6)
    single = normalise_maps(GETAM(0)(model, x, LABELS))
    assert not torch.allclose(out, single, atol=1e-3)  # the mirrored view changed the maps


def test_scales_average_the_views_brought_back_to_input_size(setup):
    model, x = setup
    method = GETAM(0)
    out = MultiViewMaps(method, scales=[1.0, 1.5])(model, x, LABELS)
    assert out.shape == (2, 5, 64, 48)
    big = F.interpolate(x, size=(96, 72), mode="bilinear", align_corners=False)  # 1.5×, multiples of 8
    back = F.interpolate(method(model, big, LABELS), size=(64, 48), mode="bilinear", align_corners=True)
    expected = (normalise_maps(method(model, x, LABELS)) + normalise_maps(back)) / 2
    assert torch.allclose(out, expected, atol=1e-6)
    assert (out[LABELS == 0] == 0).all() and out.min() >= 0 and out.max() <= 1
    assert (out[LABELS > 0].flatten(1).amax(1) > 0.5).all()


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="positive"):
        MultiViewMaps(GETAM(), scales=[1.0, 0.0])
    with pytest.raises(ValueError, match="non-empty"):
        MultiViewMaps(GETAM(), scales=[])
    with pytest.raises(pydantic.ValidationError, match="scales must be positive"):
        CamConfig(scales=[-1.0])


def test_reports_name_the_views():
    from wsss.attention.views import describe_views

    assert describe_views(CamConfig()) == "map views: scale 1"
    assert describe_views(CamConfig(scales=[1.0, 1.5], flip=True)) == "map views: scales 1, 1.5, mirrored"
