"""`make bench` (= `python -m bench`): throughput, latency and memory of the real consumer.

Runs `leadattr run` as a subprocess (as production does) against a Kafka broker and a Redis of its
own (default 127.0.0.1:29092 and :26379, started and stopped by the bench when not running), so
it never disturbs the test suite's servers on 9092/6379. Figures go to bench-results/report.json
and bench-results/bench.png; docs/performance.md records them.
"""
