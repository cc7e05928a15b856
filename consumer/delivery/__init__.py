"""The commit protocol in one home: publishing a batch's outputs and committing its input offsets
(a Kafka transaction, or flush and commit), the committed-offset floor, the journal clean-up, and
settling a commit whose outcome is unknown."""
