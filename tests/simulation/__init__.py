"""A deterministic simulation of the grant/revoke pipeline, in the spirit of FoundationDB's simulation tests.

- ``idp.py``: the IdP, whose add/remove calls finish only when the simulation answers them;
- ``settle.py``: lets the services' tasks run until each waits on the simulation (steps are atomic);
- ``world.py``: the real services on one database, a manual clock, restarts, drains, the audit check;
- ``model.py``: the policy as a dict and an independent model of what it allows (the invariants);
- ``steps.py``: the steps, the seeded scheduler that picks them, how each is carried out;
- ``runner.py``: a fresh database per seed, the end of a run, shrinking a failure to a minimal replay;
- ``parallel.py``: seeds dealt to worker processes (each its own database), for CI and the figures;
- ``__main__.py``: ``python -m tests.simulation --seeds N`` prints figures; ``test_simulation.py``: CI;
- ``holes/``: the holes of issue 26 as patches, and ``put_back.sh N ARGS`` to run the simulation on a
  copy of the checkout with one of them put back.
"""
