DROP TABLE device_resources;
