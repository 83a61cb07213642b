package inspect

import "net/http"

// routePage mounts the page. (Being built: issue 15.)
func (in *Inspector) routePage(mux *http.ServeMux) {}
