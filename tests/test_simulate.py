import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_aet.core import geometry
from napari_aet.core.errors import AETInputError
from napari_aet.core.simulate import (
    SimulationConfig, _smooth_field, facet_labels, make_particle, project_atoms, reference_config, simulate,
)


def test_reference_regime_is_one_call():
    sim = simulate(reference_config(seed=5))
    ts = sim.tilt_series
    assert ts.data.shape == (21, 144, 144) and sim.ideal.data.shape == (144, 144, 144)
    np.testing.assert_allclose(ts.angles, np.arange(-65, 65.1, 6.5))
    assert ts.pixel_size == 0.357 and ts.data.dtype == np.float32
    # Poisson noise is present but intensity is conserved across projections within 1%
    totals = ts.data.sum(axis=(1, 2))
    assert np.ptp(totals) / totals.mean() < 0.01
    assert totals.mean() == pytest.approx(sim.particle.is_particle.sum(), rel=0.01)
    clean = simulate(reference_config(seed=5, dose=None)).tilt_series.data
    assert np.abs(ts.data - clean).max() > 0


def test_noise_free_intensity_conserved_and_zero_tilt_equals_ideal_sum(small_sim):
    d = small_sim.tilt_series.data.astype(np.float64)
    totals = d.sum(axis=(1, 2))
    assert np.ptp(totals) / totals.mean() < 1e-4
    zero = int(np.argmin(np.abs(small_sim.tilt_series.angles)))
    assert small_sim.tilt_series.angles[zero] == 0
    ideal_sum = small_sim.ideal.data.sum(axis=0)
    assert np.abs(d[zero] - ideal_sum).max() < 1e-4 * d[zero].max()


def test_same_seed_same_data_other_seed_differs():
    cfg = SimulationConfig(size=1.5, n_voxels=48, pixel_size=0.4, dose=1e4, angle_error=0.5, shift_error=1.0,
                           shape="spheres", orientation="random", seed=3)
    a, b = simulate(cfg), simulate(cfg)
    np.testing.assert_array_equal(a.tilt_series.data, b.tilt_series.data)
    np.testing.assert_array_equal(a.particle.positions, b.particle.positions)
    c = simulate(cfg.replace(seed=4))
    assert not np.array_equal(a.tilt_series.data, c.tilt_series.data)


def test_truth_surface_and_facets_of_aligned_octahedron():
    p = make_particle(SimulationConfig(shape="octahedron", size=3.0, orientation="aligned", centre_offset=0))
    a = p.lattice_constant
    cn = cKDTree(p.positions).query_ball_point(p.positions, a / np.sqrt(2) * 1.1, return_length=True) - 1
    np.testing.assert_array_equal(p.surface, cn < 12)
    r = p.positions - p.origin
    families = {
        "100": (np.vstack([np.eye(3), -np.eye(3)]), a / 2),
        "111": (np.array([[i, j, k] for i in (1, -1) for j in (1, -1) for k in (1, -1)]) / np.sqrt(3), a / np.sqrt(3)),
    }
    for fam, (normals, spacing) in families.items():
        atoms = r[p.facet == fam]
        assert len(atoms) >= 8, fam
        h = atoms @ normals.T
        outer = (r @ normals.T).max(0)
        # every atom of the family sits in the outermost plane along one of its normals
        assert np.all(np.any(h > outer - spacing / 2, axis=1)), fam
    assert not np.any(p.facet[~p.surface] != "")


def test_facet_labels_on_a_cube_are_all_100():
    a = 3.924
    g = np.arange(-3, 4)
    lat = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).astype(float)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    sites = ((lat[:, None] + basis[None]).reshape(-1, 3)) * a
    sites = sites[np.all(np.abs(sites) <= 3 * a + 1e-6, axis=1)]
    surface = np.any(np.abs(sites) > 3 * a - 1e-6, axis=1)
    lab = facet_labels(sites, surface, a)
    face_interior = surface & (np.sum(np.abs(sites) > 3 * a - 1e-6, axis=1) == 1)
    assert np.all(lab[face_interior] == "100")
    assert np.all(lab[~face_interior] == "")


def test_smooth_field_strain_is_the_gradient_of_displacement():
    rng = np.random.default_rng(2)
    r = rng.uniform(-10, 10, size=(30, 3))
    u, eps = _smooth_field(r, 0.02, 15.0, np.random.default_rng(9))
    h = 1e-4
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]):
        dj = np.zeros(3)
        dj[j] = h
        di = np.zeros(3)
        di[i] = h
        ui_j = (_smooth_field(r + dj, 0.02, 15.0, np.random.default_rng(9))[0][:, i] - u[:, i]) / h
        uj_i = (_smooth_field(r + di, 0.02, 15.0, np.random.default_rng(9))[0][:, j] - u[:, j]) / h
        np.testing.assert_allclose(eps[:, k], 0.5 * (ui_j + uj_i), atol=1e-5)


def test_strain_displacement_offsite_and_substrate_truth():
    cfg = SimulationConfig(size=3.0, strain=0.01, offsite_fraction=0.03, substrate=True, seed=8)
    sim = simulate(cfg)
    p, t = sim.particle, sim.truth_table()
    rot, a = p.rotation, p.lattice_constant
    metal = t["atom"] == 1
    # sites = positions - R u lie on the rotated fcc lattice (for atoms on sites)
    on = (t["fcc"] == 1).to_numpy()
    sites = (p.positions[on] - p.origin) @ rot - p.displacement[on]
    frac = sites / (a / 2)
    assert np.abs(frac - np.round(frac)).max() < 1e-6
    assert np.all(np.round(frac).sum(1) % 2 == 0)
    assert np.abs(t.loc[on, "exx"]).max() > 1e-3
    # off-site atoms: moved off the lattice, flagged, no displacement/strain given, not too close
    off = metal.to_numpy() & ~on
    assert off.sum() == round(0.03 * metal.sum())
    assert t.loc[off, ["ux", "exx"]].isna().all().all()
    d, _ = cKDTree(p.positions[metal]).query(p.positions[off], k=2)
    assert d[:, 1].min() > 1.9
    # substrate: below the particle, carbon, not metal atoms, weak
    sub = t[t["atom"] == 0]
    assert len(sub) > 100 and set(sub["species"]) == {"C"}
    assert sub["z"].max() < t.loc[metal, "z"].min()
    assert sub["intensity"].max() < 0.02


def test_builtin_sample_sits_on_a_support_with_a_few_offsite_atoms():
    """The demo's sample, as the reference particle: on a (SiN-like) support under it along the
    beam, with surface vacancies and a few atoms off their f.c.c. sites (figure e's black)."""
    from napari_aet._sample_data import simulate_sample

    sim = simulate_sample()
    p, t = sim.particle, sim.truth_table()
    metal = (t["atom"] == 1).to_numpy()
    assert sim.support_normal == (0.0, 0.0, -1.0) and sim.metadata()["support_normal"] == [0.0, 0.0, -1.0]
    support = t[~metal]
    assert len(support) > 500 and set(support["species"]) == {"Si"}
    assert support["z"].max() < t.loc[metal, "z"].min()  # under the particle, along -z
    off = metal & (t["fcc"] == 0).to_numpy()
    assert 5 <= off.sum() <= 30 and sim.metadata()["n_offsite_atoms"] == off.sum()
    assert t.loc[off, "surface"].all()  # only surface atoms have room to move off their sites
    d, _ = cKDTree(p.positions[metal]).query(p.positions[off], k=2)
    assert d[:, 1].min() >= 2.45  # resolvable, never squeezed against a neighbour
    # its vacancies: fewer atoms than the same particle without them
    full = simulate(sim.config.replace(vacancy_fraction=0.0, offsite_fraction=0.0, substrate=False))
    assert full.particle.is_particle.sum() > metal.sum()
    assert simulate(sim.config.replace(substrate=False)).support_normal is None
    # napari's sample: the same simulation; its atoms layer is the particle's, off-site atoms included
    from napari_aet._sample_data import make_sample_pt

    _, _, (points, kwargs, _) = make_sample_pt()
    assert len(points) == metal.sum() and set(kwargs["features"]["species"]) == {"Pt"}
    assert (kwargs["features"]["fcc"] == 0).sum() == off.sum()


def test_offsite_min_distance_is_kept():
    cfg = SimulationConfig(size=2.5, offsite_fraction=0.05, offsite_distance=1.2, offsite_min_distance=2.4, seed=3)
    p = simulate(cfg).particle
    off = ~p.on_site
    assert off.sum() > 0
    d, _ = cKDTree(p.positions).query(p.positions[off], k=2)
    assert d[:, 1].min() >= 2.4
    with pytest.raises(AETInputError, match="offsite_min_distance"):
        simulate(cfg.replace(offsite_min_distance=0.1))


def test_shifts_and_angle_errors_are_applied_and_recorded():
    cfg = SimulationConfig(size=1.5, n_voxels=56, pixel_size=0.4, tilt_range=60, tilt_step=30,
                           shift_error=3.0, angle_error=1.0, seed=1)
    sim = simulate(cfg)
    assert np.abs(sim.shifts).max() <= 3.0 and np.abs(sim.shifts).max() > 0.5
    assert np.abs(sim.true_angles[:, 1] - sim.tilt_series.angles).max() > 0.05
    ref = project_atoms(sim.particle.positions, np.ones(len(sim.particle.positions)), sim.true_angles,
                        (56, 56), 0.4, cfg.b_factor)
    vv, uu = np.mgrid[0:56, 0:56]
    for a in range(len(ref)):
        img, im0 = sim.tilt_series.data[a], ref[a]
        du = (img * uu).sum() / img.sum() - (im0 * uu).sum() / im0.sum()
        dv = (img * vv).sum() / img.sum() - (im0 * vv).sum() / im0.sum()
        np.testing.assert_allclose([du, dv], sim.shifts[a], atol=0.02)


def test_euler_angle_series():
    eul = np.array([[0, -40, 0], [30, 20, -30], [90, 45, 10]], float)
    sim = simulate(SimulationConfig(size=1.5, n_voxels=48, pixel_size=0.4, angles=eul.tolist(), seed=2))
    assert sim.tilt_series.angles.shape == (3, 3)
    totals = sim.tilt_series.data.sum(axis=(1, 2))
    assert np.ptp(totals) / totals.mean() < 1e-4
    uv = geometry.project_points(sim.particle.positions, eul)
    img = sim.tilt_series.data[1]
    vv, uu = np.mgrid[0:48, 0:48]
    cu = geometry.index_to_angstrom((img * uu).sum() / img.sum(), 48, 0.4)
    assert cu == pytest.approx(uv[1, :, 0].mean(), abs=0.02)


@pytest.mark.parametrize("shape", ["wulff", "octahedron", "spheres", "sphere"])
def test_shapes_have_plausible_size(shape):
    p = make_particle(SimulationConfig(shape=shape, size=3.0, seed=4))
    diameter = 2 * np.linalg.norm(p.positions - p.positions.mean(0), axis=1).max()
    assert 15 < diameter < 36
    assert len(p.positions) > 200


@pytest.mark.parametrize("change, match", [
    ({"size": 9.0}, "does not fit"),
    ({"shape": "cube"}, "unknown particle shape"),
    ({"lattice_constant": 39.24}, "not plausible"),
    ({"element": "Fe"}, "not fcc"),
    ({"pixel_size": 0.0}, "pixel size"),
])
def test_bad_simulation_settings(change, match):
    with pytest.raises(AETInputError, match=match):
        simulate(SimulationConfig(**change))


def test_forward_models_share_one_interface():
    """Gaussian atoms: the numpy projection, its torch twin and the simulator agree; the abTEM
    model takes the same call; unknown models and missing species say what to do."""
    import torch

    from napari_aet.core.errors import AETInputError
    from napari_aet.core.forward import AbtemPotential, GaussianAtoms, forward_model

    rng = np.random.default_rng(4)
    xyz = rng.uniform(-6, 6, (20, 3))
    angles = np.array([-40.0, 0.0, 35.0])
    model = forward_model("gaussian", b_factor=4.0)
    numpy_tilts = model.project(xyz, angles, (48, 48), 0.4, species=["Pt"] * 20)
    twin = model.torch_projector(angles, (48, 48), 0.4)
    sigma = np.sqrt(4.0 / (8 * np.pi**2))
    torch_tilts = twin.project(torch.as_tensor(xyz, dtype=torch.float32), torch.ones(20),
                               torch.full((20,), sigma)).numpy()
    np.testing.assert_allclose(torch_tilts, numpy_tilts, atol=2e-4 * numpy_tilts.max())
    assert abs(numpy_tilts.sum(axis=(1, 2)) - 20).max() < 0.05  # unit intensity per Pt atom, all inside
    with pytest.raises(AETInputError, match="species"):
        AbtemPotential().project(xyz, angles, (48, 48), 0.4, weights=np.ones(20))
    with pytest.raises(AETInputError, match="unknown"):
        forward_model("multislice-of-my-own")
    assert isinstance(forward_model("abtem"), AbtemPotential) and isinstance(model, GaussianAtoms)
