"""Testbeds: models trained here so that every experiment has a target that really memorised its forget set and a
retain model that never saw it. ``tofu`` (the TOFU testbed, shipped tiny tier + SmolLM2 tier), ``muse`` (the
MUSE-News raw-text testbed, built on first use), ``finetune`` (the fine-tuning both use) and ``specs`` (the
resolver of model names such as ``testbed:retain``, which ``mrdkit.load_model`` is).
"""
