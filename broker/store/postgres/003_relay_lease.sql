-- Version 3: a lease on each outbound entry (see Store.LeaseRelay), so
-- that of several processes on one database only one relays a message at
-- a time, and Expire keeps off a relay under way in any of them.
ALTER TABLE outbound ADD COLUMN lease_holder text COLLATE "C";
ALTER TABLE outbound ADD COLUMN lease_until_ns bigint;

---- create above / drop below ----

ALTER TABLE outbound DROP COLUMN lease_until_ns;
ALTER TABLE outbound DROP COLUMN lease_holder;
