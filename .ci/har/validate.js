// Validates HAR files against the HAR 1.2 schema (har-validator, whose
// schemas are har-schema's): node validate.js FILE... exits 0 when every
// file is valid, else prints each error and exits 1.
'use strict';
const fs = require('fs');
const validate = require('har-validator');

(async () => {
  let failed = false;
  for (const file of process.argv.slice(2)) {
    const har = JSON.parse(fs.readFileSync(file, 'utf8'));
    try {
      await validate.har(har);
    } catch (e) {
      failed = true;
      console.log(`${file}: ${e.message}`);
      for (const err of e.errors || []) {
        console.log(`  ${err.dataPath || '(root)'}: ${err.message} ${JSON.stringify(err.params)}`);
      }
    }
  }
  process.exit(failed ? 1 : 0);
})();
