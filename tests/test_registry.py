import sys
import textwrap
import warnings
from importlib import metadata

import pytest

from occlusion_distill.errors import PluginError, UsageError
from occlusion_distill.registry import KINDS, PluginLoadWarning, Registry, list_plugins, registry


def test_decorator_bare_named_and_create_drops_none():
    reg = Registry("widgets")

    @reg.register
    def plain(size=3):
        """A plain widget."""
        return ("plain", size)

    @reg.register("fancy-one", description="Custom text")
    class Fancy:
        def __init__(self, size=5):
            self.size = size

    assert reg.names() == ["fancy-one", "plain"]
    assert reg.get("plain").description == "A plain widget."
    assert reg.get("fancy-one").description == "Custom text"
    assert reg.create("plain", size=None) == ("plain", 3)  # None keeps the default, as in timm
    assert reg.create("fancy-one", size=7).size == 7
    assert "built-in" in reg.get("plain").origin


def test_duplicate_name_names_both_origins():
    reg = Registry("widgets")
    reg.add("same", lambda: 1, origin="pkg-a==1.0")
    with pytest.raises(PluginError) as err:
        reg.add("same", lambda: 2, origin="pkg-b==2.0")
    assert "pkg-a==1.0" in str(err.value) and "pkg-b==2.0" in str(err.value)


def test_unknown_name_suggests_closest():
    with pytest.raises(PluginError) as err:
        registry("occlusions").get("lower-hlf")
    msg = str(err.value)
    assert "lower-half" in msg and "\n" not in msg


def test_every_kind_has_builtins():
    listing = list_plugins()
    assert set(listing) == set(KINDS)
    names = {k: {e["name"] for e in v} for k, v in listing.items()}
    assert {"none", "lower-half", "upper-half"} <= names["occlusions"]
    assert {"expression", "gender", "age"} <= names["tasks"]
    assert {"finetune", "kd"} <= names["distillers"]
    assert {"resnet10t", "inception-resnet-v1"} <= names["backbones"]
    assert "synthfaces" in names["datasets"]
    for entries in listing.values():
        for e in entries:
            assert e["description"] and e["origin"]


def test_any_timm_model_is_a_backbone():
    entry = registry("backbones").get("resnet34")
    assert entry.origin.startswith("timm==")
    assert "resnet34" in registry("backbones")
    with pytest.raises(PluginError, match="did you mean"):
        registry("backbones").get("resnet1O")


def make_distribution(root, dist_name, module_name, module_source, entry_points):
    """A really installed (importable, discoverable) distribution: a module plus its .dist-info."""
    (root / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{dist_name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.2.3\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


PLUGIN_SOURCE = '''
from occlusion_distill.occlusions import Occlusion
import numpy as np

class Stripe(Occlusion):
    """Hides a horizontal stripe through the eyes."""
    def sample(self, landmarks, shape):
        return {"y": float(landmarks[:2, 1].mean())}
    def coverage(self, shape, y=0.0, **params):
        rows = np.arange(shape[0])[:, None] + 0.5
        return np.broadcast_to(np.abs(rows - y) < 3, shape[:2]).copy()
'''


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    make_distribution(tmp_path, "occdistill-stripe", "occd_stripe_plugin", PLUGIN_SOURCE,
                      {"occlusion_distill.occlusions": {"stripe": "occd_stripe_plugin:Stripe"}})
    make_distribution(tmp_path, "occdistill-broken", "occd_broken_plugin", "raise ImportError('boom')\n",
                      {"occlusion_distill.occlusions": {"broken": "occd_broken_plugin:Nope"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_plugin_is_listed_and_broken_one_warns(plugin_path):
    reg = Registry("occlusions")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = reg.names()
    assert "stripe" in names and "broken" not in names
    assert reg.get("stripe").origin == "occdistill-stripe==1.2.3"
    assert reg.get("stripe").description == "Hides a horizontal stripe through the eyes."
    msgs = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    assert any("broken" in m and "occdistill-broken==1.2.3" in m and "boom" in m for m in msgs)


def test_plugins_env_var_limits_loading(plugin_path, monkeypatch):
    monkeypatch.setenv("OCCDISTILL_PLUGINS", "none")
    assert "stripe" not in Registry("occlusions").names()
    monkeypatch.setenv("OCCDISTILL_PLUGINS", "occdistill-stripe")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken one is not even imported
        assert "stripe" in Registry("occlusions").names()


def test_cli_lists_installed_plugin_and_survives_broken_one(plugin_path, cli):
    env = {"PYTHONPATH": str(plugin_path) + ":" + ":".join(sys.path)}
    res = cli("list", "--json", env=env)
    assert res.returncode == 0, res.stderr
    import json

    data = json.loads(res.stdout)
    stripe = [e for e in data["occlusions"] if e["name"] == "stripe"]
    assert stripe and stripe[0]["origin"] == "occdistill-stripe==1.2.3"
    assert any("broken" in w for w in data["warnings"])
    assert "Traceback" not in res.stderr
    assert set(KINDS) <= set(data)
    for kind in KINDS:
        assert all({"name", "description", "origin"} <= set(e) for e in data[kind])


def test_installed_plugin_runs_in_the_pipeline(plugin_path, cli, tmp_path):
    env = {"PYTHONPATH": str(plugin_path) + ":" + ":".join(sys.path)}
    out = tmp_path / "run"
    res = cli("run", "--occlusion", "stripe", "--preset", "smoke", "--epochs", "1", "--quiet", "--out", out, env=env)
    assert res.returncode == 0, res.stderr
    metrics = __import__("json").loads((out / "metrics.json").read_text())
    assert metrics["origins"]["occlusion"] == "occdistill-stripe==1.2.3"
    # the broken plugin beside it costs one warning line, not Python's multi-line warning format
    warning_lines = [l for l in res.stderr.splitlines() if "broken" in l]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("occdistill: warning:")
    assert "PluginLoadWarning" not in res.stderr


def test_metadata_sees_the_fake_distribution(plugin_path):
    # guards the fixture itself: if importlib.metadata stopped finding it, the tests above would be vacuous
    names = {d.metadata["Name"] for d in metadata.distributions(path=[str(plugin_path)])}
    assert {"occdistill-stripe", "occdistill-broken"} <= names


def make_clash(root, module):
    """A third-party distribution whose occlusion takes the built-in name 'lower-half'."""
    make_distribution(root, "occdistill-clash", module, PLUGIN_SOURCE.replace("Stripe", "Half"),
                      {"occlusion_distill.occlusions": {"lower-half": f"{module}:Half"}})


def test_clash_reaches_the_cli_as_one_line_naming_both_origins(tmp_path, cli):
    make_clash(tmp_path, "occd_clash_plugin2")
    env = {"PYTHONPATH": str(tmp_path) + ":" + ":".join(sys.path)}
    res = cli("run", "--occlusion", "lower-half", "--preset", "smoke", "--out", tmp_path / "r", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "occdistill-clash==1.2.3" in lines[0] and "built-in" in lines[0] and "lower-half" in lines[0]
    assert not (tmp_path / "r").exists()


def test_clash_with_a_builtin_is_raised_on_every_lookup_naming_both_origins(tmp_path, monkeypatch):
    make_clash(tmp_path, "occd_clash_plugin3")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("occlusions")
    reg.add("lower-half", object, origin="occlusion-distill==0.1.0 (built-in)")
    # not hidden as "unknown name" by `in`, nor forgotten after the first lookup
    for lookup in (reg.names, lambda: "lower-half" in reg, lambda: reg.get("lower-half")):
        with pytest.raises(PluginError, match="occdistill-clash==1.2.3") as err:
            lookup()
        assert "built-in" in str(err.value)


def test_plugin_that_also_uses_the_decorator_is_credited_to_its_package(tmp_path, cli):
    # an author who copies a built-in's ``@occlusions.register(...)`` besides the entry point: one plugin,
    # not a clash with itself
    source = PLUGIN_SOURCE.replace("class Stripe", "from occlusion_distill.registry import occlusions\n\n"
                                   "@occlusions.register('dotted')\nclass Stripe")
    make_distribution(tmp_path, "occdistill-dotted", "occd_dotted_plugin", source,
                      {"occlusion_distill.occlusions": {"dotted": "occd_dotted_plugin:Stripe"}})
    env = {"PYTHONPATH": str(tmp_path) + ":" + ":".join(sys.path)}
    res = cli("list", "occlusions", "--json", env=env)
    assert res.returncode == 0, res.stderr
    dotted = [e for e in __import__("json").loads(res.stdout)["occlusions"] if e["name"] == "dotted"]
    assert dotted == [{"name": "dotted", "description": "Hides a horizontal stripe through the eyes.",
                       "origin": "occdistill-dotted==1.2.3"}]


def test_a_keyword_option_given_as_on_the_command_line_says_how_to_write_it_from_python():
    task = registry("tasks").create("expression")
    with pytest.raises(UsageError, match="from Python, write it 'lambda_' \\(the command line's 'lambda'\\)"):
        registry("distillers").build("kd", task=task, **{"lambda": 0.5})
