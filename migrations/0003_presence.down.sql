DROP TABLE presence_events;
