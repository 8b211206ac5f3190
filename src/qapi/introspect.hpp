// The query-qmp-schema data, generated from the schema.
#pragma once

#include "qapi/visit.hpp"

namespace qapi {

const Json& qmp_schema_introspection();

}  // namespace qapi
