"""The apt hook copies the engine for its runner (roles/provider_swap/tasks/apt_hook.yml): every package of
plugins/module_utils must be in provider_swap__engine_packages, or the runner fails on its first import."""
import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_module_utils_package_is_copied_by_the_apt_hook():
    base = os.path.join(REPO, "plugins", "module_utils")
    packages = sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d, "__init__.py")))
    with open(os.path.join(REPO, "roles", "provider_swap", "vars", "main.yml")) as f:
        listed = yaml.safe_load(f)["provider_swap__engine_packages"]
    assert packages and sorted(listed) == packages
