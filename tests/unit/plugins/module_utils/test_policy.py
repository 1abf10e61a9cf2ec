"""Policy: defaults, presets and overrides, validated with messages naming the knob."""
import pytest

from ansible_collections.switchyard.fs.plugins.module_utils._errors import PolicyError
from ansible_collections.switchyard.fs.plugins.module_utils._policy import DEFAULTS, KNOBS, PRESETS, resolve_policy


def test_production_is_default_plus_its_knobs():
    p = resolve_policy("production")
    assert (p.require_rescue, p.rescue_exec_check, p.locking, p.smoke, p.auto_rollback, p.allow_unlocked_commit) == \
        (True, True, "required", "required", True, False)
    assert p.smoke_host_fallback is False and resolve_policy("default").smoke_host_fallback is True
    assert resolve_policy("production", {"smoke_host_fallback": True}).smoke_host_fallback is True
    assert p.suid_sgid == DEFAULTS["suid_sgid"]


def test_coreutils_switch_is_production_plus_its_knobs():
    p = resolve_policy("coreutils_switch")
    for k, v in PRESETS["production"].items():
        assert getattr(p, k) == v
    assert p.ownership_strict and p.require_preservation and p.source_trust == "require_trusted"
    assert p.extra_mount_checks == ["/usr", "/bin", "/sbin", "/usr/bin", "/usr/sbin"]
    assert p.forbid_paths == ["/proc", "/sys", "/dev", "/run"]


def test_explicit_keys_override_the_preset():
    assert resolve_policy("production", {"smoke": "off"}).smoke == "off"


def test_unknown_key_is_named_with_the_valid_ones():
    with pytest.raises(PolicyError) as e:
        resolve_policy("default", {"suid_sgdi": "warn"})
    assert "suid_sgdi" in e.value.msg and "suid_sgid" in e.value.msg


@pytest.mark.parametrize("key,value", [("suid_sgid", "maybe"), ("rescue_min_count", -1), ("forbid_paths", ["rel"]),
                                       ("auto_rollback", "yes")])
def test_bad_values_name_the_knob(key, value):
    with pytest.raises(PolicyError) as e:
        resolve_policy("default", {key: value})
    assert "policy.%s" % key in e.value.msg


def test_unknown_preset_is_named():
    with pytest.raises(PolicyError, match="nightly"):
        resolve_policy("nightly")


def test_every_preset_key_is_a_knob():
    for preset in PRESETS.values():
        assert set(preset) <= set(KNOBS)
