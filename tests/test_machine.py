"""The machine line tells apart CPUs that share a model name (training/machine.py)."""

import platform

from training import machine

# Both report "AMD EPYC". ZEN4: trimmed from this project's Zen 4 virtual machine. ZEN3: an
# EPYC 7003 (Milan) as AMD numbers it (family 19h = 25, model 1), not copied from our VM.
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma

processor\t: 1
model name\t: another CPU
"""
ZEN4 = """processor\t: 0
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni avx512vl
"""


def test_zen3_and_zen4_read_apart():
    zen3, zen4 = machine.cpuinfo_fields(ZEN3), machine.cpuinfo_fields(ZEN4)
    assert machine.cpu_model(zen3) == machine.cpu_model(zen4) == "AMD EPYC"
    assert machine.cpu_signature(zen3) == "family 25, model 1"
    assert machine.cpu_signature(zen4) == "family 25, model 17"
    assert machine.cpu_features(zen3) == ["AVX2"]
    assert machine.cpu_features(zen4) == ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16"]


def test_first_processor_only():
    assert machine.cpuinfo_fields(ZEN3)["model name"] == "AMD EPYC"


def test_missing_cpuinfo_leaves_the_name_alone(tmp_path):
    fields = machine.read_cpuinfo(str(tmp_path / "absent"))
    assert fields == {}
    assert machine.cpu_signature(fields) == "" and machine.cpu_features(fields) == []
    # Without /proc/cpuinfo the name is platform.processor()'s, else "unknown CPU".
    assert machine.cpu_model(fields) == (platform.processor() or "unknown CPU")


def test_describe_names_family_model_and_flags():
    details = {
        **machine.info(),
        "cpu": "AMD EPYC",
        "cpu_signature": "family 25, model 17",
        "cpu_features": ["AVX2", "AVX-512"],
    }
    assert machine.describe(details).startswith(
        "machine: AMD EPYC (family 25, model 17, AVX2 AVX-512), "
    )
    line = machine.describe({**details, "cpu_signature": "", "cpu_features": []})
    assert line.startswith("machine: AMD EPYC, ")


def test_bfloat16_note_only_where_the_cpu_lacks_bf16_instructions():
    zen3 = {"gpus": 0, "cpu_features": machine.cpu_features(machine.cpuinfo_fields(ZEN3))}
    zen4 = {"gpus": 0, "cpu_features": machine.cpu_features(machine.cpuinfo_fields(ZEN4))}
    note = machine.bfloat16_note(zen3, "mixed_bfloat16")
    assert note.startswith("note: mixed_bfloat16 on a CPU without bfloat16 instructions")
    assert "this one has AVX2)" in note
    assert machine.bfloat16_note(zen4, "mixed_bfloat16") is None
    assert (
        machine.bfloat16_note({"gpus": 0, "cpu_features": ["AVX2", "AMX"]}, "mixed_bfloat16")
        is None
    )
    assert machine.bfloat16_note(zen3, "float32") is None
    assert machine.bfloat16_note({**zen3, "gpus": 1}, "mixed_bfloat16") is None
    assert "none of the flags read" in machine.bfloat16_note({"gpus": 0}, "mixed_bfloat16")
