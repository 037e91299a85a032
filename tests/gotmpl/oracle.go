// Command oracle renders Go text/template templates with the standard library so that
// tests can compare monitor's Python engine against Go byte for byte.
//
// Usage:
//
//	oracle TEMPLATE_FILE DATA_JSON_FILE [lbconfig|generic]   render one template to stdout; exit 1 with the error on stderr
//	oracle -batch                                           JSON lines on stdin -> JSON lines on stdout
//
// A batch request is {"name": N, "template": T, "mode": "lbconfig"|"generic", "data": D};
// the answer is {"ok": bool, "out_b64": base64 of the output, "err": error text}.
//
// Data modes:
//   - lbconfig: D is decoded into the reference's structs (Port fields are uint16).
//   - generic: D is decoded into interface{} with UseNumber; a number that parses as an
//     int64 becomes a Go int, any other number a float64 (the Python side does the same:
//     json.loads gives int for integral literals without '.', 'e' or 'E').
//
// Slices are copied so that their capacity equals their length (see convertNumbers).
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"text/template"
)

type Backend struct {
	Host    string
	Address string
	Port    uint16
}

type ApiLBConfig struct {
	ApiPort      uint16
	LbPort       uint16
	StatPort     uint16
	Backends     []Backend
	FrontendAddr string
}

type Root struct {
	LBConfig ApiLBConfig
}

type request struct {
	Name     string          `json:"name"`
	Template string          `json:"template"`
	Mode     string          `json:"mode"`
	Data     json.RawMessage `json:"data"`
}

type response struct {
	OK     bool   `json:"ok"`
	OutB64 string `json:"out_b64"`
	Err    string `json:"err"`
}

func convertNumbers(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return int(i)
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			panic(err)
		}
		return f
	case map[string]interface{}:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
		return x
	case []interface{}:
		// make gives cap == len: the JSON decoder's spare capacity would otherwise let
		// `slice` reach past the length, an artefact Python lists do not model.
		out := make([]interface{}, len(x))
		for i, e := range x {
			out[i] = convertNumbers(e)
		}
		return out
	}
	return v
}

func decode(mode string, raw []byte) (interface{}, error) {
	if mode == "lbconfig" {
		var root Root
		if err := json.Unmarshal(raw, &root); err != nil {
			return nil, err
		}
		if root.LBConfig.Backends != nil {
			exact := make([]Backend, len(root.LBConfig.Backends))
			copy(exact, root.LBConfig.Backends)
			root.LBConfig.Backends = exact
		}
		return root, nil
	}
	if mode != "generic" {
		return nil, fmt.Errorf("unknown mode %q", mode)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return convertNumbers(v), nil
}

func render(name, text, mode string, raw []byte) ([]byte, error) {
	data, err := decode(mode, raw)
	if err != nil {
		return nil, fmt.Errorf("oracle: bad data: %v", err)
	}
	tmpl, err := template.New(name).Parse(text)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, data); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func batch() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<30)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "oracle: bad request:", err)
			os.Exit(2)
		}
		res := response{OK: true}
		b, err := render(req.Name, req.Template, req.Mode, req.Data)
		if err != nil {
			res.OK = false
			res.Err = err.Error()
		} else {
			res.OutB64 = base64.StdEncoding.EncodeToString(b)
		}
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "oracle:", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		os.Exit(2)
	}
	out.Flush()
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-batch" {
		batch()
		return
	}
	if len(os.Args) != 3 && len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: oracle TEMPLATE DATA.json [lbconfig|generic] | oracle -batch")
		os.Exit(2)
	}
	mode := "lbconfig"
	if len(os.Args) == 4 {
		mode = os.Args[3]
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	b, err := render(os.Args[1], string(text), mode, raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
}
