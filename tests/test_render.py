"""Shaded-sphere and density renderings, and the reference work's figures built from them."""

import numpy as np
import pytest
from PIL import Image

from napari_aet.core import figures as fg
from napari_aet.core import render
from napari_aet.core.errors import AETInputError


def _share(img, colour, tol=60):
    """Share of pixels within ``tol`` (RGB distance) of ``colour`` (hex) among non-background ones."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(img)[..., :3].astype(float)
    target = np.array(to_rgb(colour)) * 255
    fg_px = np.abs(rgb - 255).sum(-1) > 30
    near = np.linalg.norm(rgb - target, axis=-1) < tol
    return (near & fg_px).sum() / max(fg_px.sum(), 1)


def test_sphere_lands_where_projected_with_its_radius():
    basis = render.camera_basis((0, 0, 1), up=(0, 1, 0))  # looking down z: x right, y up
    xyz = np.array([[0.0, 0.0, 0.0], [10.0, 5.0, 0.0]])
    img, scale = render.render_spheres(xyz, 2.0, ["#ff0000", "#0000ff"], basis, (400, 400), supersample=1,
                                       depth_cue=0)
    red = (img[..., 0] > 100) & (img[..., 2] < 80) & (img[..., 1] < 80)
    blue = (img[..., 2] > 100) & (img[..., 0] < 80)
    rows, cols = np.nonzero(blue)
    r_red, c_red = np.nonzero(red)
    # the blue atom is 10 Å right and 5 Å up of the red one
    assert abs((cols.mean() - c_red.mean()) * scale - 10.0) < 0.1
    assert abs((r_red.mean() - rows.mean()) * scale - 5.0) < 0.1
    # its disc (every non-background pixel left of the middle) has the sphere's radius: a 2 Å circle within 3%
    disc = (np.abs(img.astype(int) - 255).sum(-1) > 0) & (np.arange(400)[None, :] < (cols.mean() + c_red.mean()) / 2)
    assert abs(disc.sum() * scale ** 2 / (np.pi * 2.0 ** 2) - 1) < 0.03


def test_nearer_sphere_hides_the_farther_one():
    basis = render.camera_basis((0, 0, 1), up=(0, 1, 0))
    xyz = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 5.0]])  # the blue one is 5 Å nearer the viewer
    for order in ([0, 1], [1, 0]):
        img, _ = render.render_spheres(xyz[order], 2.0, np.array([[1, 0, 0], [0, 0, 1.0]])[order], basis, (200, 200))
        centre = img[100, 100].astype(int)
        assert centre[2] > centre[0] + 50


def test_volume_rendering_puts_a_blob_where_it_is():
    vol = np.zeros((48, 48, 48), np.float32)
    z, y, x = np.mgrid[:48, :48, :48]
    vol += np.exp(-((x - 36) ** 2 + (y - 24) ** 2 + (z - 24) ** 2) / 8.0)  # to the right (+x)
    img, step = render.render_volume(vol, render.camera_basis((0, 0, 1), up=(0, 1, 0)), size=120,
                                     limits=(0.0, 1.0), opacity=20)
    bright = img.sum(-1)
    r, c = np.unravel_index(np.argmax(bright), bright.shape)
    assert abs(r - 60) <= 2  # y = centre
    assert abs((c - 59.5) * step - 12) < 1.5  # 12 voxels right of the centre
    assert bright.std() > 5


def test_rendering_refuses_nan():
    with pytest.raises(AETInputError, match="NaN"):
        render.render_spheres(np.array([[np.nan, 0, 0]]), 1.0, "red", np.eye(3))
    with pytest.raises(AETInputError, match="3D"):
        render.render_volume(np.zeros((4, 4)), np.eye(3))


@pytest.fixture(scope="module")
def analysed(small_sim):
    from napari_aet.core.analysis import analyze_atoms

    table = small_sim.truth_table()
    rng = np.random.default_rng(3)
    support = np.c_[rng.uniform(-8, 8, (60, 2)), np.full(60, -12.0)]  # a layer of non-atoms under the particle
    import pandas as pd

    extra = pd.DataFrame({"x": support[:, 0], "y": support[:, 1], "z": support[:, 2], "atom": 0})
    table = pd.concat([table, extra], ignore_index=True)
    return analyze_atoms(table, support_normal=(0, 0, -1))


def test_reference_figures_are_written_with_their_colours(tmp_path, analysed, small_sim):
    table, summary = analysed
    vols = {"RESIRE": small_sim.ideal.data, "U-Net": small_sim.ideal.data}
    paths = fg.write_figures(tmp_path, table, summary, vols, small_sim.config.pixel_size, 60.0, workers=1)
    names = {p.split("/")[-1] for p in paths}
    for key in fg.REFERENCE_FIGURES:
        assert {f"{key}.png", f"{key}.svg"} <= names, key
    images = {k: np.asarray(Image.open(tmp_path / f"{k}.png").convert("RGB")) for k in fg.REFERENCE_FIGURES}
    for k, img in images.items():
        assert img.shape[1] >= 900, k  # 300 dpi
        assert img.std() > 20, k  # not blank
    n_off = int((table.loc[table["atom"] == 1, "fcc"] != 1).sum())
    assert _share(images["a_particle_on_support"], fg.FCC_COLOURS[1]) > 0.2  # atoms on sites: the reference's blue
    assert _share(images["a_particle_on_support"], fg.SUPPORT_COLOUR, tol=30) > 0.002  # the support shows, grey
    # without the support's direction, non-atoms (noise peaks all round) are not drawn at all
    no_support = dict(summary, settings={**summary["settings"], "support_normal": None})
    fg.save(fg.particle_on_support(table, no_support), tmp_path, "bare", formats=("png",))
    bare = np.asarray(Image.open(tmp_path / "bare.png").convert("RGB"))
    assert _share(bare, fg.SUPPORT_COLOUR, tol=30) < 0.2 * _share(images["a_particle_on_support"], fg.SUPPORT_COLOUR, tol=30)
    assert n_off == 0 or _share(images["a_particle_on_support"], "#000000", tol=40) > 0
    facets = images["bcd_facets"]
    third = facets.shape[1] // 3
    fam = table["facet"].astype(str)
    if (fam == "100").any():
        assert _share(facets[:, third:2 * third], fg.FACET_COLOURS["100"]) > 0.01  # (c) has {100} red
        assert _share(facets[:, 2 * third:], fg.FACET_COLOURS["100"]) < 0.002  # (d) has none
    assert _share(facets[:, 2 * third:], fg.FACET_COLOURS["111"]) > 0.01  # (d) {111} blue
    strain = images["g_layer_strain"]
    reds = (strain[..., 0].astype(int) - strain[..., 2] > 60).sum()
    blues = (strain[..., 2].astype(int) - strain[..., 0] > 60).sum()
    assert reds > 100 and blues > 100  # a diverging map with both signs (colour bar included)


def test_chosen_layer_and_unknown_figures(tmp_path, analysed):
    table, summary = analysed
    layers = sorted(int(v) for v in table["layer"].dropna().unique())
    paths = fg.write_figures(tmp_path, table, summary, layer=layers[0], names=["f_layer_displacements"], workers=1)
    assert len(paths) == 2
    with pytest.raises(AETInputError, match="no atoms in layer"):
        fg.write_figures(tmp_path, table, summary, layer=layers[-1] + 5)
    with pytest.raises(AETInputError, match="need tomograms"):
        fg.write_figures(tmp_path, table, summary, names=["fourier_3d"])
