DROP TABLE command_events;
DROP TABLE commands;
