-- A reading's device is checked once per batch instead of once per row.
--
-- The foreign key readings_device_fkey ran a trigger for every reading
-- inserted: a lookup of the device by id and a KEY SHARE lock of its row,
-- ~5 of the ~18 µs PostgreSQL spent on each reading's rows. The insert of a
-- batch (postgres.insertReadingRows) now locks the batch's devices
-- itself, FOR NO KEY UPDATE, in id order, in the statement that inserts
-- the readings, and inserts only the readings of the devices it locked:
-- a device deleted before the lock is skipped, and a delete that comes
-- after it waits for the batch's commit. That lock is the one the batch
-- took anyway to advance the devices' last_seen_at.
--
-- What the foreign key's ON DELETE CASCADE did, the trigger below does:
-- the readings of deleted devices go in the statement that deletes them.
-- Its query takes a snapshot of its own (a volatile function's, in READ
-- COMMITTED), so it also sees the readings of a batch the delete waited
-- for. readings_device_received_idx serves it, as it served the cascade.
ALTER TABLE readings DROP CONSTRAINT readings_device_fkey;

CREATE FUNCTION iotgate_delete_device_readings() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    DELETE FROM readings r USING gone g WHERE r.device_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_delete_readings
    AFTER DELETE ON devices
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION iotgate_delete_device_readings();
