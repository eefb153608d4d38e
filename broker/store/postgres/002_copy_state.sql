-- Version 2: a copy's state as a column beside its record, for Backlog's
-- counts of what waits (copies delivered or retrieved but not answered,
-- copies still relaying), taken from the records already stored.
ALTER TABLE copies ADD COLUMN state text COLLATE "C";
UPDATE copies SET state = convert_from(record, 'UTF8')::jsonb ->> 'state';
ALTER TABLE copies ALTER COLUMN state SET NOT NULL;
CREATE INDEX copies_waiting ON copies (state, received_ns) WHERE state IN ('delivered', 'retrieved', 'relaying');

---- create above / drop below ----

DROP INDEX copies_waiting;
ALTER TABLE copies DROP COLUMN state;
