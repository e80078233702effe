// runstate dashboard: small behaviours on top of htmx. Pages work without this file.
"use strict";
