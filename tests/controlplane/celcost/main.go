// Command celcost prints the estimated cost of every x-kubernetes-validations
// rule of CustomResourceDefinition files, as the API server of the pinned
// Kubernetes version estimates it when it validates a CRD (the rule's worst
// case times how many times it may run), the total per CRD, and both limits.
// It exits 1 when a rule or a CRD is over its limit.
//
// Usage: celcost CRD.yaml...
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

type ruleCost struct {
	CRD  string `json:"crd"`
	Path string `json:"path"`
	Rule string `json:"rule"`
	Cost uint64 `json:"cost"`
}

type report struct {
	Rules        []ruleCost        `json:"rules"`
	Totals       map[string]uint64 `json:"totals"`
	RuleLimit    uint64            `json:"ruleLimit"`
	CRDLimit     uint64            `json:"crdLimit"`
	CompileError []string          `json:"compileErrors"`
}

func main() {
	out := report{Totals: map[string]uint64{}, RuleLimit: validation.StaticEstimatedCostLimit, CRDLimit: validation.StaticEstimatedCRDCostLimit}
	envSet := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion(), true)
	for _, file := range os.Args[1:] {
		data, err := os.ReadFile(file)
		if err != nil {
			fail(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(data, &crd); err != nil {
			fail(fmt.Errorf("%s: %w", file, err))
		}
		for _, version := range crd.Spec.Versions {
			var schema apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(version.Schema.OpenAPIV3Schema, &schema, nil); err != nil {
				fail(err)
			}
			name := crd.Name + "/" + version.Name
			walk(&out, name, envSet, &schema, validation.RootCELContext(&schema), "")
		}
	}
	sort.Slice(out.Rules, func(i, j int) bool { return out.Rules[i].Cost > out.Rules[j].Cost })
	encoded, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(encoded))
	for _, rule := range out.Rules {
		if rule.Cost > out.RuleLimit {
			os.Exit(1)
		}
	}
	for _, total := range out.Totals {
		if total > out.CRDLimit {
			os.Exit(1)
		}
	}
	if len(out.CompileError) > 0 {
		os.Exit(1)
	}
}

func walk(out *report, crd string, envSet *environment.EnvSet, schema *apiextensions.JSONSchemaProps, ctx *validation.CELSchemaContext, path string) {
	if len(schema.XValidations) > 0 {
		info, err := ctx.TypeInfo()
		if err != nil || info == nil {
			out.CompileError = append(out.CompileError, fmt.Sprintf("%s %s: no type information: %v", crd, path, err))
		} else {
			results, err := cel.Compile(info.Schema, info.DeclType, celconfig.PerCallLimit, envSet, cel.NewExpressionsEnvLoader())
			if err != nil {
				out.CompileError = append(out.CompileError, fmt.Sprintf("%s %s: %v", crd, path, err))
			}
			for i, result := range results {
				if result.Error != nil {
					out.CompileError = append(out.CompileError, fmt.Sprintf("%s %s[%d]: %v", crd, path, i, result.Error))
					continue
				}
				cardinality := result.MaxCardinality
				if ctx.MaxCardinality != nil {
					cardinality = *ctx.MaxCardinality
				}
				cost := multiply(result.MaxCost, cardinality)
				out.Rules = append(out.Rules, ruleCost{CRD: crd, Path: path, Rule: schema.XValidations[i].Rule, Cost: cost})
				out.Totals[crd] = add(out.Totals[crd], cost)
			}
		}
	}
	for name, property := range schema.Properties {
		child := property
		walk(out, crd, envSet, &child, ctx.ChildPropertyContext(&child, name), path+"."+name)
	}
	if schema.Items != nil && schema.Items.Schema != nil {
		walk(out, crd, envSet, schema.Items.Schema, ctx.ChildItemsContext(schema.Items.Schema), path+"[]")
	}
	if schema.AdditionalProperties != nil && schema.AdditionalProperties.Schema != nil {
		walk(out, crd, envSet, schema.AdditionalProperties.Schema, ctx.ChildAdditionalPropertiesContext(schema.AdditionalProperties.Schema), path+"{}")
	}
}

func multiply(a, b uint64) uint64 {
	if a != 0 && b > ^uint64(0)/a {
		return ^uint64(0)
	}
	return a * b
}

func add(a, b uint64) uint64 {
	if ^uint64(0)-a < b {
		return ^uint64(0)
	}
	return a + b
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "celcost:", err)
	os.Exit(2)
}
