"""The U-Net: size, geometry computed from its layers, full-resolution probabilities, .keras round trip."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from gigapath_desktop import ModelError
from gigapath_desktop.model import build_unet, load_model, logits_model, model_geometry, save_model, with_dtype
from gigapath_desktop.model.unet import LOGITS, FoldedLogits
from gigapath_desktop.training.engine import fold


def test_default_model_is_compact_and_its_geometry_comes_from_its_layers() -> None:
    model = build_unet()
    assert 4000 <= model.count_params() <= 5000
    geometry = model_geometry(model)
    # space-to-depth 4, then pooling by 4 twice: cells of 4, 16 and 64 px; 3x3 at 4 px, 5x5 at 16 and 64 px.
    assert geometry.stride == 64 and geometry.block == 4
    assert geometry.halo == 1 * 4 + 2 * 16 + 2 * 64
    assert geometry.receptive_field >= 2 * geometry.halo
    other = model_geometry(build_unet(filters=(4, 6), kernels=(5, 7)))
    assert (other.stride, other.halo) == (16, 2 * 4 + 3 * 16)


def test_output_is_full_resolution_probability_of_the_tile() -> None:
    model = build_unet()
    g = model_geometry(model)
    image = np.random.default_rng(0).integers(0, 256, (1, 128 + 2 * g.halo, 192 + 2 * g.halo, 3), np.uint8)
    out = np.asarray(model(image))
    assert out.shape == (1, 128, 192, 1)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("dtype, bound", [("float64", 1e-12), ("float32", 1e-5)])
def test_the_training_network_gives_the_model_own_logits(dtype: str, bound: float) -> None:
    """Training differentiates `logits_model` (folded input, rescaling moved into the stem's weights); prediction
    runs the Keras model: both must compute the same function, down to float64 rounding."""
    keras.utils.set_random_seed(3)
    model = with_dtype(build_unet(classes=3), dtype)
    g = model_geometry(model)
    image = np.random.default_rng(1).integers(0, 256, (128 + 2 * g.halo, 192 + 2 * g.halo, 3), np.uint8)
    expected = np.asarray(keras.Model(model.input, model.get_layer(LOGITS).output)(image[None]))
    actual = np.asarray(logits_model(model)(tf.constant(fold(image, g.block))))
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape == (1, 32, 48, 16 * 3)
    assert np.abs(actual - expected).max() <= bound * np.abs(expected).max()


def test_a_stem_the_fold_does_not_cover_trains_through_the_plain_graph() -> None:
    """A loaded model whose stem has no bias (tileable, but not what build_unet makes) keeps the Keras graph."""
    config = build_unet().get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] == "stem":
            layer["config"]["use_bias"] = False
    model = keras.Model.from_config(config)
    assert FoldedLogits.fits(build_unet()) and not FoldedLogits.fits(model)
    g = model_geometry(model)
    image = np.random.default_rng(2).integers(0, 256, (64 + 2 * g.halo, 64 + 2 * g.halo, 3), np.uint8)
    net = logits_model(model)
    expected = np.asarray(keras.Model(model.input, model.get_layer(LOGITS).output)(image[None]))
    np.testing.assert_allclose(np.asarray(net(tf.constant(fold(image, g.block)))), expected, rtol=1e-6, atol=1e-6)
    assert [id(v) for v in net.trainable_variables] == [id(v) for v in model.trainable_variables]


def test_layers_that_break_tiling_are_refused() -> None:
    inputs = keras.Input((None, None, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    with pytest.raises(ModelError, match="padding='valid'"):
        model_geometry(keras.Model(inputs, x))


def test_keras_round_trip_and_bad_files(tmp_path: Path) -> None:
    model = build_unet()
    path = save_model(model, tmp_path / "m.keras")
    again = load_model(path)
    size = 64 + 2 * model_geometry(model).halo
    image = np.random.default_rng(1).integers(0, 256, (1, size, size, 3), np.uint8)
    assert np.array_equal(np.asarray(model(image)), np.asarray(again(image)))
    assert model_geometry(again) == model_geometry(model)
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(ModelError, match="not a .keras model"):
        load_model(junk)
    with pytest.raises(ModelError, match="no such model"):
        load_model(tmp_path / "missing.keras")
