DROP TRIGGER devices_delete_readings ON devices;
DROP FUNCTION iotgate_delete_device_readings();
-- Validated against every reading: the trigger left none of a deleted
-- device.
ALTER TABLE readings ADD CONSTRAINT readings_device_fkey FOREIGN KEY (device_id)
    REFERENCES devices (id) ON DELETE CASCADE;
