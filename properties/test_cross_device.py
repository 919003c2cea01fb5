"""Cross-device agreement: the same inputs on two devices (or dtypes, or thread counts) agree within policy.

Each comparison pair (`devices.pairs`) runs a candidate against a reference: every accelerator
present against the CPU in fp32 and in its half types, CUDA twice under deterministic algorithms
(bit for bit), and on every machine the CPU pairs: fp32 against the float64 oracle and one
thread against several. A model split over several accelerators must agree with one of them.
"""

from hypothesis import given, settings, strategies as st

from devices.pairs import Side, outputs_on_cpu, run_side
from devices.placement import split_across
from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import compared, device_side, pair as _pair, record
from properties.examples import examples
from strategies.batches import model_inputs

PROPERTY = "cross-device"

# One vs several threads is costly on a busy machine (OpenMP workers wait for cores); a thread
# dependence rarely hides behind one input shape, so a fifth of the profile's examples is enough.
THREAD_EXAMPLES = examples(max(5, settings.default.max_examples // 5))


def check_cross_device(subject, pair, inputs) -> None:
    """The candidate side's outputs (hidden states included) match the reference side's within the policy."""
    reference = run_side(subject, inputs, pair.reference)
    candidate = run_side(subject, inputs, pair.candidate)
    assert_outputs_close(
        candidate, reference, pair.tolerance, model=subject.name, prop=f"{PROPERTY} ({pair})",
        masks=subject.real_token_masks(reference, inputs),
    )


def check_split_matches_single(subject, devices, inputs) -> None:
    """A model split over `devices` (device_map) matches the same model on the first device alone."""
    names = [d.name for d in devices]
    single = run_side(subject, inputs, Side(names[0]))
    split = outputs_on_cpu(split_across(subject, names), inputs)
    assert_outputs_close(
        split, single, tolerance(subject.dtype, "device", "split"), model=subject.name,
        prop=f"{PROPERTY} (split over {'+'.join(names)} vs {names[0]})",
        masks=subject.real_token_masks(single, inputs),
    )


@given(data=st.data())
def test_cross_device(subject, comparison_pair, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    pair = comparison_pair
    record(subject, inputs, prop=PROPERTY, pair=pair.id, reference=str(pair.reference),
           candidate=str(pair.candidate), tolerance=str(pair.tolerance), replay=lambda: compared(_pair(
               device_side(pair.candidate), device_side(pair.reference), real_tokens="expected", what=str(pair))))
    check_cross_device(subject, pair, inputs)


@settings(max_examples=THREAD_EXAMPLES)
@given(data=st.data())
def test_thread_count(subject, cpu_threads_pair, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, pair=cpu_threads_pair.id, threads=cpu_threads_pair.candidate.threads,
           tolerance=str(cpu_threads_pair.tolerance), replay=lambda: compared(_pair(
               device_side(cpu_threads_pair.candidate), device_side(cpu_threads_pair.reference), real_tokens="expected",
               what=str(cpu_threads_pair))))
    check_cross_device(subject, cpu_threads_pair, inputs)


@given(data=st.data())
def test_split_matches_single_device(subject, accelerator_group, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, devices=[d.name for d in accelerator_group],
           replay="suite-only")  # a device_map split needs accelerate and the devices: the suite replays it
    check_split_matches_single(subject, accelerator_group, inputs)
