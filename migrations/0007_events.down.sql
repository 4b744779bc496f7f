DROP TABLE events_trimmed;
DROP TABLE events;
