"""Shaded-sphere and density renderings, and the reference work's figures built from them."""

import re

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
    bare_fig = fg.particle_on_support(table, no_support)
    title = bare_fig.axes[0].get_title()
    assert "no support direction given" in title and "--" not in title  # no command-line hint in a figure
    fg.save(bare_fig, tmp_path, "bare", formats=("png",))
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


def _ball(n: int = 48, radius: float = 7.0) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    return (1 / (1 + np.exp((np.sqrt(x ** 2 + y ** 2 + z ** 2) - radius) / 0.7))).astype(np.float32)


def _without_wedge(vol: np.ndarray, tilt_range: float) -> np.ndarray:
    """What a tilt series about y over ±tilt_range leaves of a volume: its missing wedge emptied."""
    from napari_aet.core.fourier import missing_wedge_mask

    mask = missing_wedge_mask(vol.shape, tilt_range, centred=False)
    return np.clip(np.real(np.fft.ifftn(np.fft.fftn(vol) * ~mask)), 0, None).astype(np.float32)


def _aspect(img) -> float:
    """Brightness-weighted spread down the image over its spread across it."""
    w = np.asarray(img, float).sum(-1)
    r, c = np.mgrid[:w.shape[0], :w.shape[1]]
    mr, mc = (w * r).sum() / w.sum(), (w * c).sum() / w.sum()
    return float(np.sqrt((w * (r - mr) ** 2).sum() / (w * (c - mc) ** 2).sum()))


def test_density_view_shows_the_missing_wedge_elongation():
    """Fig. 2a-b looks along the tilt axis: a ball reconstructed with a ±60° wedge is tall in
    the picture (z up), a round ball round; looking down the beam hides the elongation."""
    ball = _ball()
    vols = {"wedge": _without_wedge(ball, 60.0), "ball": ball}
    images, step, limits = fg.density_images(vols, pixel_size=1.0, size=160)
    assert _aspect(images["ball"]) == pytest.approx(1.0, abs=0.03)
    assert _aspect(images["wedge"]) > 1.4
    down_the_beam, _, _ = fg.density_images(vols, pixel_size=1.0, view=(90.0, 0.0), size=160)
    assert _aspect(down_the_beam["wedge"]) < 1.1
    # the panels share one crop that holds the content with little empty frame
    assert images["ball"].shape == images["wedge"].shape
    lit = (images["ball"].sum(-1) > 36) | (images["wedge"].sum(-1) > 36)
    assert lit.any(1).mean() > 0.85 and lit.any(0).mean() > 0.85


def test_density_figure_has_letters_colour_bars_and_the_elongation(small_sim):
    from napari_aet.core.metrics import atom_elongation

    ideal = small_sim.ideal.data
    fig = fg.density_maps({"RESIRE": _without_wedge(ideal, 45.0), "U-Net": ideal}, small_sim.config.pixel_size,
                          size=120)
    panels, bars = fig.axes[:2], fig.axes[2:]
    assert [t.get_text() for ax in panels for t in ax.texts if t.get_fontweight() == "bold"] == ["a", "b"]
    assert len(bars) == 2 and all("Pt-atom units" in b.get_ylabel() for b in bars)
    assert "tilt axis" in fig._suptitle.get_text()
    # each title measures the elongation (metrics.atom_elongation): the wedge's the larger
    stretch = [float(re.search(r"z/x (\d+\.\d+)", ax.get_title()).group(1)) for ax in panels]
    assert stretch[0] > stretch[1] + 0.03
    assert stretch[1] == pytest.approx(atom_elongation(ideal), abs=0.006)


def test_atom_elongation_of_simulated_atoms(small_sim):
    from napari_aet.core.metrics import atom_elongation

    ideal = small_sim.ideal.data
    assert atom_elongation(ideal) == pytest.approx(1.0, abs=0.02)
    assert atom_elongation(_without_wedge(ideal, 45.0)) > 1.04
    assert np.isnan(atom_elongation(np.zeros((16, 16, 16))))


def test_fourier_view_shows_the_wedge_between_its_lines():
    """Fig. 2c-d: seen along k_y, a tomogram missing a ±60° wedge is dark beyond 60° from k_x,
    exactly between the dashed lines; k axes in 1/Å and a colour bar per panel."""
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(40, 40, 40)).astype(np.float32) + 5
    vols = {"full": noise, "wedge": _without_wedge(noise, 60.0)}
    images, extents, _ = fg.fourier_images(vols, size=120)
    for name, img in images.items():
        h, w = img.shape[:2]
        x0, x1, z0, z1 = extents[name]
        assert (x0, x1) == pytest.approx((-0.5, 0.5), abs=0.01)  # cycles per voxel: Nyquist at the edges
        kx = x0 + (np.arange(w) + 0.5) / w * (x1 - x0)
        kz = z1 - (np.arange(h) + 0.5) / h * (z1 - z0)  # row 0 at the top: k_z up
        angle = np.degrees(np.arctan2(np.abs(kz)[:, None], np.abs(kx)[None, :]))
        ring = (np.hypot(kz[:, None], kx[None, :]) > 0.1) & (np.hypot(kz[:, None], kx[None, :]) < 0.45)
        bright = img.astype(float).sum(-1)
        inside, outside = bright[ring & (angle > 66)].mean(), bright[ring & (angle < 54)].mean()
        if name == "wedge":
            assert inside < 0.05 * outside
        else:
            assert inside > 0.7 * outside
    fig = fg.fourier_density_maps(vols, 60.0, pixel_size=0.5, size=120)
    panels, bars = fig.axes[:2], fig.axes[2:]
    assert len(bars) == 2 and all("log" in b.get_ylabel() for b in bars)
    for ax, letter in zip(panels, "cd"):
        assert "1/Å" in ax.get_xlabel() and "1/Å" in ax.get_ylabel()
        assert ax.get_xlim() == pytest.approx((-1.0, 1.0), abs=0.02)  # 0.5 cycles per voxel of 0.5 Å
        slopes = sorted(np.degrees(np.arctan2(np.diff(ln.get_ydata()), np.diff(ln.get_xdata())))[0]
                        for ln in ax.get_lines())
        assert slopes == pytest.approx([-60.0, 60.0], abs=1e-6)  # the wedge's edges
        assert letter in [t.get_text() for t in ax.texts]


def test_volume_fit_to_the_view_and_trim():
    vol = np.zeros((20, 30, 40), np.float32)
    vol[2:-2, 2:-2, 2:-2] = 1.0
    down_z = render.camera_basis((0, 0, 1), up=(0, 1, 0))
    img, step = render.render_volume(vol, down_z, size=100, limits=(0, 1), opacity=50, fit="view")
    lit = img.sum(-1) > 30
    assert step == pytest.approx(0.4)  # the 40-voxel width fills 100 pixels
    assert lit.any(0).mean() > 0.85 and 0.6 < lit.any(1).mean() < 0.8  # 36 x 26 voxels lit
    diag, step_d = render.render_volume(vol, down_z, size=100, limits=(0, 1), opacity=50)
    assert step_d == pytest.approx(np.linalg.norm([20, 30, 40]) / 100)
    # one absorption per voxel in either fit: the same colour through the same 16 voxels
    half_clear = [render.render_volume(vol, down_z, size=100, limits=(0, 1), opacity=2, fit=f)[0][50, 50]
                  for f in ("view", "diagonal")]
    assert np.abs(half_clear[0].astype(int) - half_clear[1]).max() <= 3 and 90 < half_clear[0][0] < 130
    (cut,), box = render.trim_background([img], "black", margin=0.0)
    assert cut.shape[0] == lit.any(1).sum() and cut.shape[1] == lit.any(0).sum()
    with pytest.raises(AETInputError, match="fit"):
        render.render_volume(vol, down_z, fit="tight")
