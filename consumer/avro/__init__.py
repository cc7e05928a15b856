"""Wire formats: the Avro schemas, the schema registry, the hand-written LeadEvent reader and
AttributedLead writer, and the records of the three output topics."""
