"""The harness shared by the tests, the fault suite, the bench and the demo: real Kafka topics
(kafka.py), real consumer processes (process.py) and the local services (services.py)."""
