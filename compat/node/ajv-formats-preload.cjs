// Preload (node --require) for running the guide's schema seed examples verbatim.
// @kafkajs/confluent-schema-registry compiles JSON Schemas with Ajv 7 in strict mode, which
// throws on `format: "uuid"` / `"date-time"` unless formats are registered (an application
// would add ajv-formats). This registers those two standard formats on every Ajv instance;
// it changes nothing on the wire.
const ajv = require('ajv');

const UUID = /^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[tT ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[zZ]|[+-]\d{2}:?\d{2})$/;

const Original = ajv.default;
class AjvWithFormats extends Original {
  constructor(opts = {}) {
    super({ ...opts, formats: { uuid: UUID, 'date-time': DATE_TIME, ...(opts.formats || {}) } });
  }
}
ajv.default = AjvWithFormats;
