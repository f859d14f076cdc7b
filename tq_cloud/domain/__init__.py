"""The vocabulary every layer speaks, at the ground floor: tasks and their statuses, the
limits AWS and the engine put on them, outcomes, flow and schedule descriptions, lifecycle
events and the flow-control options. Nothing here imports the ports, the engine or a feature,
so the ports can describe their contracts in these words without importing the engine
(`tests/unit/test_structure.py` holds every layer to that)."""
