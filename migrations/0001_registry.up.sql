-- Schema registry and device registry.
--
-- schema_versions holds every uploaded version of every XSD schema. A version
-- is immutable once stored (only its description may change): devices and
-- stored readings refer to it, so its meaning must never shift under them.
-- Versions are numbered 1, 2, ... per name by the application.
CREATE TABLE schema_versions (
    name             text        NOT NULL,
    version          integer     NOT NULL,
    description      text        NOT NULL DEFAULT '',
    xsd              text        NOT NULL,
    target_namespace text        NOT NULL DEFAULT '',
    global_elements  text[]      NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_versions_pkey PRIMARY KEY (name, version),
    CONSTRAINT schema_versions_name_check CHECK (char_length(name) BETWEEN 1 AND 128),
    CONSTRAINT schema_versions_version_check CHECK (version >= 1),
    CONSTRAINT schema_versions_xsd_check CHECK (xsd <> '')
);

-- Reject changes to anything but the description of a stored version. The
-- error is a restrict_violation (SQLSTATE 23001), which the store reports as
-- a conflict.
CREATE FUNCTION schema_versions_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name
        OR NEW.version IS DISTINCT FROM OLD.version
        OR NEW.xsd IS DISTINCT FROM OLD.xsd
        OR NEW.target_namespace IS DISTINCT FROM OLD.target_namespace
        OR NEW.global_elements IS DISTINCT FROM OLD.global_elements
        OR NEW.created_at IS DISTINCT FROM OLD.created_at
    THEN
        RAISE EXCEPTION 'schema version %/% is immutable', OLD.name, OLD.version
            USING ERRCODE = 'restrict_violation',
                  CONSTRAINT = 'schema_versions_immutable';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER schema_versions_immutable
    BEFORE UPDATE ON schema_versions
    FOR EACH ROW EXECUTE FUNCTION schema_versions_immutable();

-- Resolving a schema by the namespace it defines (xs:import).
CREATE INDEX schema_versions_namespace_idx ON schema_versions (target_namespace, version);

-- schema_imports records, for each schema version, which registered
-- version each namespace it imports resolved to when it was stored, so that
-- recompiling it later gives the same schema. Rows are written with their
-- version and never change; RESTRICT keeps an imported version from being
-- deleted while a schema depends on it.
CREATE TABLE schema_imports (
    name           text    NOT NULL,
    version        integer NOT NULL,
    namespace      text    NOT NULL,
    import_name    text    NOT NULL,
    import_version integer NOT NULL,
    CONSTRAINT schema_imports_pkey PRIMARY KEY (name, version, namespace),
    CONSTRAINT schema_imports_version_fkey FOREIGN KEY (name, version)
        REFERENCES schema_versions (name, version) ON UPDATE RESTRICT ON DELETE CASCADE,
    CONSTRAINT schema_imports_import_fkey FOREIGN KEY (import_name, import_version)
        REFERENCES schema_versions (name, version) ON UPDATE RESTRICT ON DELETE RESTRICT
);
CREATE INDEX schema_imports_import_idx ON schema_imports (import_name, import_version);

CREATE FUNCTION schema_imports_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'imports of schema version %/% are immutable', OLD.name, OLD.version
        USING ERRCODE = 'restrict_violation',
              CONSTRAINT = 'schema_imports_immutable';
END;
$$;

CREATE TRIGGER schema_imports_immutable
    BEFORE UPDATE ON schema_imports
    FOR EACH ROW EXECUTE FUNCTION schema_imports_immutable();

-- devices is the device registry, keyed by the device's bare JID, normalized
-- by the application (PRECIS-prepared localpart, lower-case domain, no
-- resource). A device may be bound to one schema version; MATCH FULL makes
-- the pair all-or-nothing, and RESTRICT keeps a version in use from being
-- deleted.
CREATE TABLE devices (
    jid            text        NOT NULL,
    name           text        NOT NULL DEFAULT '',
    labels         jsonb       NOT NULL DEFAULT '{}',
    schema_name    text,
    schema_version integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_pkey PRIMARY KEY (jid),
    CONSTRAINT devices_jid_check CHECK (octet_length(jid) BETWEEN 1 AND 2047 AND strpos(jid, '/') = 0),
    CONSTRAINT devices_labels_check CHECK (jsonb_typeof(labels) = 'object'),
    CONSTRAINT devices_schema_fkey FOREIGN KEY (schema_name, schema_version)
        REFERENCES schema_versions (name, version) MATCH FULL
        ON UPDATE RESTRICT ON DELETE RESTRICT
);

-- Label selectors: containment (labels @> '{"room":"lab"}') and key
-- existence (labels ? 'room') both use the default jsonb_ops class.
CREATE INDEX devices_labels_idx ON devices USING gin (labels);
-- Serves "devices using this schema version" and the RESTRICT check on delete.
CREATE INDEX devices_schema_idx ON devices (schema_name, schema_version);
