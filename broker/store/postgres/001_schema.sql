-- Kurier's node store, version 1. Records are the JSON of the broker
-- types, as the badger store keeps them; the columns beside them are what
-- the store looks them up and orders them by. Text that orders a listing
-- is COLLATE "C", byte order, whatever the database's locale. Times that
-- order a listing are Unix nanoseconds (bigint), as precise as Go's.

-- Payloads: a header row and its chunks. complete is set, with size and
-- sha256, once every chunk is stored.
CREATE TABLE blobs (
	id       text COLLATE "C" PRIMARY KEY,
	started  timestamptz NOT NULL DEFAULT now(),
	complete boolean NOT NULL DEFAULT false,
	size     bigint NOT NULL DEFAULT 0,
	sha256   text NOT NULL DEFAULT ''
);

CREATE TABLE blob_chunks (
	blob text COLLATE "C" NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
	seq  integer NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (blob, seq)
);
-- Sealed payloads do not compress: store them without trying.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- A message references its blob; the foreign key keeps a referenced blob
-- from being deleted, the unique constraint a blob from serving two.
CREATE TABLE messages (
	id              text COLLATE "C" PRIMARY KEY,
	sender          text COLLATE "C" NOT NULL,
	received_ns     bigint NOT NULL,
	envelope_sha256 text NOT NULL,
	blob            text COLLATE "C" NOT NULL CONSTRAINT messages_blob_key UNIQUE REFERENCES blobs (id),
	record          bytea NOT NULL
);
CREATE INDEX messages_sent ON messages (sender, received_ns, id);

-- local and received_ns never change after the copy is created; the inbox
-- lists local copies only.
CREATE TABLE copies (
	message_id  text COLLATE "C" NOT NULL REFERENCES messages (id),
	recipient   text COLLATE "C" NOT NULL,
	local       boolean NOT NULL,
	received_ns bigint NOT NULL,
	deadline_ns bigint, -- NULL when nothing is due
	head        text NOT NULL,
	record      bytea NOT NULL,
	PRIMARY KEY (message_id, recipient)
);
CREATE INDEX copies_inbox ON copies (recipient, received_ns, message_id) WHERE local;
CREATE INDEX copies_due ON copies (deadline_ns, message_id, recipient) WHERE deadline_ns IS NOT NULL;

-- Evidence, in the order stored per message (pos). leaf_index is this
-- node's log position for evidence of its own log (log = ''), and the
-- issuing node's for evidence of another log. record is the JSON of
-- broker.Evidence with LeafIndex zero. message_id has no foreign key: a
-- SubmissionRejection's message is not stored.
CREATE TABLE evidence (
	message_id text COLLATE "C" NOT NULL,
	pos        bigint NOT NULL,
	log        text NOT NULL,
	leaf_index bigint NOT NULL,
	record     bytea NOT NULL,
	PRIMARY KEY (message_id, pos)
);
CREATE UNIQUE INDEX evidence_own_leaf ON evidence (leaf_index) WHERE log = '';

-- The next position of each message's evidence.
CREATE TABLE evidence_positions (
	message_id text COLLATE "C" PRIMARY KEY,
	next       bigint NOT NULL
);

-- The transparency log's head: one row, locked by every append, holding
-- the size and the compact range of [0, size) (the hashes of its perfect
-- subtrees, left to right), and the high-water mark MarkLog writes.
CREATE TABLE log_head (
	one       boolean PRIMARY KEY DEFAULT true CHECK (one),
	size      bigint NOT NULL,
	hashes    bytea[] NOT NULL,
	mark_size bigint NOT NULL,
	mark_root bytea NOT NULL
);
INSERT INTO log_head (size, hashes, mark_size, mark_root)
	VALUES (0, '{}', 0, decode('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'hex'));

-- Every node of every perfect subtree of the log (level 0: the leaf
-- hashes), written once when complete and never changed.
CREATE TABLE log_nodes (
	level smallint NOT NULL,
	idx   bigint NOT NULL,
	hash  bytea NOT NULL,
	PRIMARY KEY (level, idx)
);

-- Queues: messages waiting for another domain's node (record: JSON of
-- broker.Outbound), and own evidence that a domain's node must be sent.
CREATE TABLE outbound (
	domain     text COLLATE "C" NOT NULL,
	message_id text COLLATE "C" NOT NULL,
	record     bytea NOT NULL,
	PRIMARY KEY (domain, message_id)
);

CREATE TABLE pushes (
	domain     text COLLATE "C" NOT NULL,
	leaf_index bigint NOT NULL,
	PRIMARY KEY (domain, leaf_index)
);

---- create above / drop below ----

DROP TABLE pushes, outbound, log_nodes, log_head, evidence_positions, evidence, copies, messages, blob_chunks, blobs;
