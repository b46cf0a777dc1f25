"""tests/mutation_check.py stays runnable as the source moves on: every bug it plants still applies, exactly once,
and points at test files that exist (the sweep itself takes minutes, so it is not part of this suite)."""

import mutation_check as mc


def test_every_mutation_still_applies_to_the_source():
    mc.check_snippets(mc.MUTATIONS)  # SystemExit naming the mutation whose snippet moved
    assert all(m.old != m.new for m in mc.MUTATIONS)


def test_every_mutation_names_existing_test_files():
    missing = {(m.name, f) for m in mc.MUTATIONS for f in m.tests.split() if not (mc.ROOT / "tests" / f).is_file()}
    assert not missing
