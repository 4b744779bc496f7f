DROP FUNCTION iotgate_update_commands(text[], text[], jsonb[],
    text[], text[], timestamptz[], timestamptz[], timestamptz[],
    text[], jsonb[], text[], text[], text[], text[], text[], text[], boolean[], text[], text[]);
