/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON serialisation that stays correct when memory runs short. jansson
 * 2.14's json_dumps() ignores a failed append of an object key and returns a
 * document with that key missing (found by failing allocations one at a time);
 * what rsr signs or keeps as state must never be such a document.
 */
#include <jansson.h>

#include "internal.h"

char *rsr_json_dumps(const json_t *v, size_t flags)
{
	char *s = json_dumps(v, flags);
	json_t *back;
	bool same;

	if (!s)
		return NULL;
	back = json_loads(s, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
	same = back && json_equal((json_t *)v, back);
	json_decref(back);
	if (!same) {
		free(s);
		return NULL;
	}
	return s;
}

bool rsr_json_load_oom(const json_error_t *e)
{
	/*
	 * jansson reports most allocation failures as such, but one in setting
	 * up its lexer leaves the error as initialised: no text at all, which
	 * no parse error has.
	 */
	return json_error_code(e) == json_error_out_of_memory || e->text[0] == '\0';
}

void rsr_json_set(bool *ok, json_t *object, const char *key, json_t *value)
{
	/* json_object_set_new releases value when it fails, and fails on a NULL object or value. */
	if (json_object_set_new(object, key, value) < 0)
		*ok = false;
}

void rsr_json_push(bool *ok, json_t *array, json_t *value)
{
	if (json_array_append_new(array, value) < 0)
		*ok = false;
}

int rsr_json_check_counts(struct rsr_ctx *ctx, const char *buf, size_t len, size_t max_containers, size_t max_scalars,
			  const char *what)
{
	size_t containers = 0, scalars = 0;
	bool in_string = false, in_token = false;

	for (size_t i = 0; i < len; i++) {
		char c = buf[i];

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
			in_token = false;
			scalars++;
		} else if (c == '{' || c == '[') {
			in_token = false;
			containers++;
		} else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
			   c == '+' || c == '.') {
			if (!in_token)
				scalars++;
			in_token = true;
		} else {
			in_token = false;
		}
		if (containers > max_containers)
			return rsr_error(ctx, RSR_E_LIMIT, "%s: more than %zu JSON objects and arrays", what,
					 max_containers);
		if (scalars > max_scalars)
			return rsr_error(ctx, RSR_E_LIMIT, "%s: more than %zu JSON strings, numbers and literals", what,
					 max_scalars);
	}
	return 0;
}
