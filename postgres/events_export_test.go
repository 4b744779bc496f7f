package postgres

// EventsLockKey exposes eventsLockKey: a test takes the events lock as a
// concurrent writer of events would.
const EventsLockKey = eventsLockKey
