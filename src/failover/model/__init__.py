"""The model checker: a simulated two-node cluster around two real cores,
exhaustive exploration, invariants, mutants, hypothesis runs and scenarios."""
