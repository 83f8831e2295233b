"""The differences catalog: every entry's demonstration runs on the installed frameworks and every
measured finding must hold as the catalog documents it; the README's table is generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import crossnn
from crossnn import backends
from crossnn import spec as S
from crossnn.backends import Backend
from crossnn.cli import main
from crossnn.differences import (
    BY_ID, ENTRIES, Lab, Unavailable, applicable, catalog, entries, presets_section, readme_section,
)

LAB = Lab()  # facts are measured once per framework for the whole module


@pytest.mark.parametrize("entry_id", [e.id for e in ENTRIES])
def test_entry_demonstration_holds(entry_id):
    entry = BY_ID[entry_id]
    try:
        findings = entry.demonstrate(LAB)
    except Unavailable as err:
        pytest.skip(f"{entry_id}: {err}")
    assert findings
    for finding in findings:
        assert finding.holds, f"{entry_id}: {finding.text}"


def test_catalog_covers_the_required_entries():
    required = {"weight-layout", "default-init", "momentum-sgd", "adam-epsilon", "weight-decay", "rmsprop", "adagrad",
                "bce-clamp", "cross-entropy-inputs", "loss-reduction", "target-broadcasting", "default-learning-rates",
                "leaky-relu-slope", "gelu-approximation", "batchnorm", "tf32", "random-streams",
                # issue 14: convolutions; issue 15: normalization, embeddings, recurrent layers
                "same-padding", "torch-same-stride", "flatten-order", "avg-pool-padding", "conv-kernel-layout",
                "layernorm-epsilon", "embedding-init", "recurrent-init", "lstm-forget-bias", "gru-gates"}
    assert required <= set(BY_ID)
    for entry in ENTRIES:
        assert entry.what and entry.spec and entry.sources
        assert set(entry.sides) == {"torch", "tensorflow"} and all(entry.sides.values())


@pytest.mark.parametrize("marker, generate, command", [("differences", readme_section, "--markdown"),
                                                       ("presets", presets_section, "--presets")])
def test_readme_tables_are_generated_from_the_catalog(marker, generate, command):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", readme, re.S)
    assert block, f"README.md lacks the generated {marker} section"
    assert block.group(1).strip() == generate().strip(), f"regenerate it: crossnn differences {command}"


def test_tables_have_a_column_per_backend_side():
    """One column per installed backend with a side (the NumPy reference has none), its title as heading."""
    header, rule, *rows = readme_section().splitlines()
    titles = [found.backend.title for found in backends.discover().values()
              if found.backend is not None and not found.backend.reference]
    cells = header.strip("| ").split(" | ")
    assert cells[0] == "difference" and cells[-1] == "crossnn's spec" and sorted(cells[1:-1]) == sorted(titles)
    assert len(rows) == len(ENTRIES) and all(row.count(" | ") == len(titles) + 1 for row in rows)


class _JaxLike(Backend):
    """A fourth backend as a plugin would declare it: its own side of two entries and a preset."""

    name = "jaxlike"
    title = "JAX / Optax"
    catalog_sides = {"adam-epsilon": "optax.adam: eps 1e-8 on √v̂", "no-such-entry": "ignored"}
    catalog_defaults = {"adam-epsilon": (S.Default(S.Adam, "eps", {"optax": 1e-8}),),
                        "default-learning-rates": (S.Default(S.Adam, "lr", {"optax": 3e-4}),)}

    def build(self, *args, **kwargs):
        raise NotImplementedError


@pytest.fixture
def jax_like(monkeypatch):
    """The installed backends with a made-up fourth in place of the real jax plugin (which has its own column)."""
    found = {name: entry for name, entry in backends.discover().items() if name != "jax"}
    found["jaxlike"] = backends.BackendEntry("jaxlike", _JaxLike(), None)
    monkeypatch.setattr(backends, "discover", lambda: found)


def test_a_new_backend_adds_its_side_and_preset_without_editing_the_catalog(jax_like, capsys):
    merged = {e.id: e for e in entries()}
    assert merged["adam-epsilon"].sides == {**BY_ID["adam-epsilon"].sides, "jaxlike": "optax.adam: eps 1e-8 on √v̂"}
    assert "jaxlike" not in merged["bce-clamp"].sides and BY_ID["adam-epsilon"].sides.keys() == {"torch", "tensorflow"}
    header, rule, *rows = readme_section().splitlines()
    assert header == "| difference | PyTorch | Keras / TensorFlow | JAX / Optax | crossnn's spec |"
    adam = next(row for row in rows if "(`adam-epsilon`)" in row)
    assert "| optax.adam: eps 1e-8 on √v̂ |" in adam and all(row.count(" | ") == 4 for row in rows)
    assert "| — |" in next(row for row in rows if "(`bce-clamp`)" in row)  # no side declared there
    assert '`defaults = "optax"`' in presets_section().splitlines()[0]

    adam = S.make(S.Adam, defaults="optax")
    assert (adam.lr, adam.eps) == (3e-4, 1e-8)
    with pytest.raises(crossnn.SpecError) as info:  # the new preset has no initializers: it says so
        S.make(S.Dense, units=2, defaults="optax")
    assert str(info.value) == ("kernel_init: missing (torch uses fan_in_uniform, keras glorot_uniform; optax has "
                               "none; write it)")

    assert main(["differences", "adam-epsilon"]) == 0
    out = capsys.readouterr().out
    assert "  JAX / Optax:        optax.adam: eps 1e-8 on √v̂" in out
    assert "  presets:            adam.eps = optax 1e-8" in out


def test_applicable_entries_follow_the_spec():
    circle = {e.id for e in applicable(crossnn.example("circle"))}
    assert {"momentum-sgd", "bce-clamp", "default-init"} <= circle
    assert "adam-epsilon" not in circle and "batchnorm" not in circle
    assert "adam-epsilon" in {e.id for e in applicable(crossnn.example("two-tower"))}
    digits = {e.id for e in applicable(crossnn.example("digits-cnn"))}  # stride 1 'same', max pooling
    assert {"conv-kernel-layout", "flatten-order", "default-init"} <= digits
    assert not digits & {"same-padding", "torch-same-stride", "avg-pool-padding", "batchnorm", "recurrent-init"}
    assert {"same-padding", "torch-same-stride"} <= {e.id for e in applicable(catalog.strided_same_spec())}
    assert "avg-pool-padding" in {e.id for e in applicable(catalog.avg_pool_pair()[0])}
    tokens = {e.id for e in applicable(crossnn.example("token-sums"))}
    assert {"embedding-init", "recurrent-init", "lstm-forget-bias"} <= tokens and "gru-gates" not in tokens
    assert "flatten-order" not in tokens  # no flatten of an image there


def test_unknown_entry_is_bad_input(capsys):
    assert main(["differences", "no-such-thing"]) == 2
    assert "no catalog entry 'no-such-thing'" in capsys.readouterr().err
