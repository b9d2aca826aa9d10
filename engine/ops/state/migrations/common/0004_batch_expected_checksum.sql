-- v4: a batch's file is proved to be its own before recovery marks it delivered: the
-- SHA-256 of the written file is recorded here before the file is renamed into place
-- (engine/sinks/directory.py); a file of that name with another checksum is another
-- writer's, and the batch is redone.
ALTER TABLE batches ADD COLUMN expected_checksum TEXT;
